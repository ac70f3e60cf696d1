"""Snapshot ids and the run record: one short name for one state of a results folder.

An id looks like ``2026-11-29-a1b2c3d``: the date of the run that made this state of the
results, and 7 hex digits of a hash of their content. The hash is computed from the results
themselves (not from anything a tool adds while reading them), so a citation and a commit of
results/ name the same data.

Run facts that differ between two runs that observed the same thing (when, on which host, with
which uv) live in one run record per folder, ``<results>/run.json`` (schema/run.schema.json),
never in the per-cell files. The record is rewritten only when the content changed: a re-run
that observes the same behaviour leaves every byte, the record included, as it was.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bgmatrix import __version__, evidence, files, paths, results
from bgmatrix.results import RESULTS_DIR, ResultError, load_all, write_text_atomic

HASH_LENGTH = 7  # as short as git's own abbreviations: enough for a few thousand snapshots
RUN_RECORD = "run.json"


def content_hash(found: Mapping[str, Any], stored: Mapping[str, str] | None = None) -> str:
    """SHA-256 over each result's canonical JSON in cell-id order (full form: sorted keys,
    ASCII, compact), so it depends on neither file order, formatting nor folder.

    ``stored``, when the caller has it, maps every cell id of ``found`` to the SHA-256 of the
    stored file it was read from: then the hash is looked up in a cache (:func:`_cached`)."""
    if stored is not None and stored.keys() == found.keys():
        return _cached(found, stored)
    return _content_hash(found)


def _content_hash(found: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    memo: dict[int, str] = {}
    for cid in sorted(found):
        canonical = canonical_json(found[cid], memo)
        # Lengths make the stream unambiguous: no id/content split hashes the same.
        digest.update(f"{cid}\0{len(canonical)}\0".encode("ascii", "replace"))
        digest.update(canonical.encode("ascii"))
    return digest.hexdigest()


_dumps = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode
_key = json.encoder.encode_basestring_ascii
#: Where a full result holds the evidence objects cells share (``"*"``: every item), the
#: parts ``canonical_json`` takes apart to reach them; an empty mapping is an object encoded
#: whole and remembered. Everything else is encoded whole, as it is met.
SHARED_PARTS: dict[str, Any] = {
    "tests": {"*": {"observations": {"*": {}}}},
    "wire": {"clauses": {"*": {"evidence": {}}}},
}


def canonical_json(value: Any, memo: dict[int, str] | None = None,
                   parts: Mapping[str, Any] = SHARED_PARTS) -> str:
    """``json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))``: the
    same text, made from its parts so that an evidence object met again is encoded once.

    Results read from one folder share their evidence objects: the store gives each object
    once, to every cell that names it. The full matrix's canonical form is 136 MB of text made
    from 3 MB of evidence, and encoding each object once takes a third of the time (1.5-1.9 s
    instead of 4.4-5.1 s for the 716 results, measured side by side on a busy machine).
    ``parts`` says where those objects sit (:data:`SHARED_PARTS`);
    ``memo`` maps ``id()`` of each one encoded so far to its text (the caller keeps the objects
    alive while it uses the memo). A dict is taken apart only when all its keys are strings,
    as ``json.dumps`` sorts them; anything else is encoded whole, so the text is always
    ``json.dumps``'s (tests/unit/test_report.py checks it)."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return _dumps(value)
    if not parts:
        if memo is None:
            return _dumps(value)
        known = memo.get(id(value))
        if known is None:
            known = memo[id(value)] = _dumps(value)
        return known
    if kind is list:
        inner = parts.get("*")
        return "[" + ",".join(_dumps(v) if inner is None else canonical_json(v, memo, inner)
                              for v in value) + "]"
    if not all(type(k) is str for k in value):
        return _dumps(value)
    # Keys in order; a run of keys with nothing shared below them is one json.dumps call
    # (its text without the braces: the same items, in the same order).
    items: list[str] = []
    run: dict[str, Any] = {}
    for k in sorted(value):
        inner = parts.get(k, parts.get("*"))
        if inner is None:
            run[k] = value[k]
            continue
        if run:
            items.append(_dumps(run)[1:-1])
            run = {}
        items.append(_key(k) + ":" + canonical_json(value[k], memo, inner))
    if run:
        items.append(_dumps(run)[1:-1])
    return "{" + ",".join(items) + "}"


#: Content hashes remembered (the newest first), each under the key of the files it was
#: computed from; a handful covers switching between branches.
CACHE_ENTRIES = 8


def _cache_path() -> Path:
    return paths.WORK_DIR / "report" / "content-hashes.json"


def _code_key() -> bytes:
    """What turns stored files into the full form, and the hash's own definition: this
    module, results.py and evidence.py. An edit to any of them is a new cache."""
    h = hashlib.sha256()
    for module in (sys.modules[__name__], results, evidence):
        h.update(Path(module.__file__ or "").read_bytes())
    return h.digest()


def _cached(found: Mapping[str, Any], stored: Mapping[str, str]) -> str:
    """The content hash of results read from files whose bytes had the digests ``stored``.

    The full form of a result is a function of its stored file's bytes: every evidence object
    it names is named by the hash of its content and checked against it on every read. So
    the same file digests (and the same reading code) give the same content hash, and the
    hash over the whole canonical form (3.6 s on the full matrix, most of the report's
    reading) is computed only when some file changed. The cache lives in the git-ignored
    work folder; one that cannot be read or written only costs that time."""
    h = hashlib.sha256(_code_key())
    for cid in sorted(stored):
        h.update(f"{cid}\0{stored[cid]}\0".encode("utf-8", "surrogateescape"))
    key = h.hexdigest()
    path = _cache_path()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    value = known.get(key)
    if isinstance(value, str) and len(value) == 64:
        return value
    value = _content_hash(found)
    kept = {key: value, **{k: v for k, v in known.items() if k != key}}
    try:
        write_text_atomic(path, json.dumps(dict(list(kept.items())[:CACHE_ENTRIES]),
                                           indent=1) + "\n")
    except OSError:
        pass
    return value


def snapshot_id_of(found: Mapping[str, Any], run: Mapping[str, Any] | None = None,
                   stored: Mapping[str, str] | None = None) -> str:
    """``<date of the run record>-<7 hex of the content hash>``; ``undated`` without one.
    ``stored``: see :func:`content_hash`."""
    date = (run or {}).get("date") or "undated"
    return f"{date}-{content_hash(found, stored)[:HASH_LENGTH]}"


def snapshot_id(results_dir: Path = RESULTS_DIR) -> str:
    """The snapshot id of the valid results in ``results_dir``."""
    return snapshot_id_of(load_all(Path(results_dir))[0], read_run(Path(results_dir)))


def read_run(results_dir: Path) -> dict | None:
    """The folder's run record, validated; None when there is none."""
    return files.read_checked(Path(results_dir) / RUN_RECORD, "run", ResultError, "run record")


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


def command(args) -> int:
    print(snapshot_id(args.results))
    return 0
