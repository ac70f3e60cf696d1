"""Folders every layer shares: the tools' one work folder (git-ignored).

``BGMATRIX_WORK`` moves it (a scratch folder for a test or a newcomer's check run).  The runner
keeps its environments and tools here, the site its validation cache; both import the name from
this module, so neither reaches into the other's layer for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from bgmatrix.spec import ROOT

WORK_DIR = Path(os.environ.get("BGMATRIX_WORK", ROOT / ".bgmatrix"))
