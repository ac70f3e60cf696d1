"""Snapshot ids: one short name for one state of the results folder, e.g. ``2026-11-29-a1b2c3d``.

A citation and a commit of results/ must name the same data, so the id is computed from the
files themselves (names and bytes), not from anything a tool adds while reading them. The date
says when the newest result was measured, which is what a reader wants to know first; the hash
tells two snapshots of the same day apart.

    python -m bgmatrix.snapshot [results/]     prints the id
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from bgmatrix.results import RESULTS_DIR

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
HASH_LENGTH = 7  # as short as git's own abbreviations: enough for a few thousand snapshots


def snapshot_id(results_dir: Path = RESULTS_DIR) -> str:
    """``<date of the newest result>-<7 hex of sha256 over the result files>``.

    The date is the newest ``provenance.finished`` (YYYY-MM-DD), ``undated`` when no file has
    one. The hash covers every ``*.json`` in the folder in file-name order, each as its name,
    its length and its bytes, so renaming, editing, adding or removing a file changes it.
    Unreadable or invalid files are hashed too (a snapshot is what is there), but give no date.
    """
    digest = hashlib.sha256()
    newest = ""
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.startswith("."):
            continue  # a writer's temporary file, never part of a snapshot
        data = path.read_bytes()
        # The length makes the stream unambiguous: no name/content split hashes the same.
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
        newest = max(newest, _finished_date(data))
    return f"{newest or 'undated'}-{digest.hexdigest()[:HASH_LENGTH]}"


def _finished_date(data: bytes) -> str:
    """The YYYY-MM-DD of a result's ``provenance.finished``, or "" when it has none."""
    try:
        finished = json.loads(data)["provenance"]["finished"]
    except (ValueError, KeyError, TypeError):
        return ""
    match = _DATE.match(finished) if isinstance(finished, str) else None
    return match.group() if match else ""


if __name__ == "__main__":
    print(snapshot_id(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_DIR))
