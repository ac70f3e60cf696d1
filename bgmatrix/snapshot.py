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
import platform
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from bgmatrix.results import RESULTS_DIR, load_all

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
HASH_LENGTH = 7  # as short as git's own abbreviations: enough for a few thousand snapshots


def snapshot_id_of(found: dict[str, dict]) -> str:
    """``<date of the newest result>-<7 hex of sha256 over the results' content>``.

    The one definition of a snapshot id (the site's citations and the shard merge both use
    it). The hash is over each result's canonical JSON in cell-id order (sorted keys, ASCII,
    compact: json's C encoder, ten times faster than the store's indented form), so it does
    not depend on file order, formatting or the folder the results were read from. The date
    is the newest ``provenance.finished`` (YYYY-MM-DD), ``undated`` when none has one.
    """
    digest = hashlib.sha256()
    newest = ""
    for cid in sorted(found):
        canonical = json.dumps(found[cid], sort_keys=True, ensure_ascii=True,
                               separators=(",", ":"))
        # Lengths make the stream unambiguous: no id/content split hashes the same.
        digest.update(f"{cid}\0{len(canonical)}\0".encode("ascii", "replace"))
        digest.update(canonical.encode("ascii"))
        finished = found[cid].get("provenance", {}).get("finished", "")
        match = _DATE.match(finished) if isinstance(finished, str) else None
        newest = max(newest, match.group() if match else "")
    return f"{newest or 'undated'}-{digest.hexdigest()[:HASH_LENGTH]}"


def snapshot_id(results_dir: Path = RESULTS_DIR) -> str:
    """The snapshot id of the valid results in ``results_dir``."""
    return snapshot_id_of(load_all(Path(results_dir))[0], read_run(Path(results_dir)))


@cache
def _run_schema() -> dict:
    return json.loads(RUN_SCHEMA_PATH.read_text(encoding="utf-8"))


def read_run(results_dir: Path) -> dict | None:
    """The folder's run record, validated; None when there is none."""
    path = Path(results_dir) / RUN_RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResultError(f"{path}: unreadable run record ({exc})") from None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(_run_schema()).iter_errors(data))
    if error is not None:
        raise ResultError(f"{path}: {error.message[:300]}")
    return data


def host(uv_version: str | None = None) -> dict:
    """The host side of a run: what ran the tools, not what the cells observed."""
    return {
        "bgmatrix": __version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "uv": uv_version or "?",
    }


def record_run(results_dir: Path, started: datetime, cells_run: int,
               uv_version: str | None = None) -> bool:
    """Update the run record if the content of ``results_dir`` changed; True if it did."""
    results_dir = Path(results_dir)
    found, _errors = load_all(results_dir)
    content = content_hash(found)
    previous = None
    try:
        previous = read_run(results_dir)
    except ResultError:
        pass  # a broken record is replaced
    if previous is not None and previous.get("content") == content:
        return False
    finished = datetime.now(timezone.utc)
    record = {
        "schema_version": 1,
        "content": content,
        "date": finished.strftime("%Y-%m-%d"),
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cells_run": cells_run,
        "host": host(uv_version),
    }
    write_text_atomic(results_dir / RUN_RECORD,
                      json.dumps(record, indent=1, sort_keys=True) + "\n")
    return True


def add_arguments(parser) -> None:  # bgmatrix snapshot [results/]
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS_DIR,
                        help="the results folder (default: results/)")


if __name__ == "__main__":
    print(snapshot_id(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_DIR))
