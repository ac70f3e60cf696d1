"""Host-side tests import the in-cell harness and oracle directly (they are plain modules)."""

import sys
from pathlib import Path

SPEC_SUITE = Path(__file__).resolve().parent.parent / "spec"
sys.path.insert(0, str(SPEC_SUITE))
