"""Fixture builders for the fault suite (tests/unit/test_faults.py): tiny local wheels of fake
releases, an offline cell world (wheels served through uv's find-links, the suite's tools
linked from the host), and helpers to drive real processes with deadlines."""
