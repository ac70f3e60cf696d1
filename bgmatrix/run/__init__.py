"""Running: environments, one cell, the sweep, CI shards, wire mode, candidates, the watch."""
