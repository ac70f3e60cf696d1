"""Environments kept for the next run of the same cell: a store keyed by everything that
decides what gets installed.

A cell's environment is a function of its install inputs: the interpreter (path and
``sys.version``), the requirements, the cutoff and the ``--exclude-newer`` exemptions, uv's
version, uv's own settings (``UV_*``: index, find-links, cache) and, for a local find-links
folder, its contents.  Two runs with the same inputs resolve the same set (the cutoff fixes the
index as of a date), so the second run can take the first one's environment as it is: no venv,
no resolution, no install, and its bytecode (under the shared prefix, keyed by the
environment's stable path) already compiled.

Safety:

- an entry is used by one run at a time (an exclusive, non-blocking ``flock``); a run that finds
  it busy builds a private environment as before;
- an entry holds the freeze it was built with; the runner compares it with the freeze the
  suite's own interpreter recorded and drops an entry that no longer matches (and re-runs the
  cell in a fresh environment), so a cell's recorded packages are always what it imported;
- only a clean run (state ``ok``) keeps its environment; wire mode (which installs a server
  into the environment) and candidate builds never use the store;
- the store cleans itself: least recently used entries go once it holds more than
  ``BGMATRIX_ENV_STORE_MAX`` entries (default 150) or more than ``BGMATRIX_ENV_STORE_BYTES``
  bytes (default 4 GiB, counted with the entries' bytecode), and entries older than a day are
  rebuilt (a release yanked since is then seen).  ``BGMATRIX_ENV_STORE=0`` turns it off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = "bgmatrix-env.json"
MAX_AGE = 24 * 3600  # seconds an entry is trusted before it is rebuilt


def enabled() -> bool:
    return os.environ.get("BGMATRIX_ENV_STORE", "1") != "0"


def _limits() -> tuple[int, int]:
    return (int(os.environ.get("BGMATRIX_ENV_STORE_MAX", "150")),
            int(os.environ.get("BGMATRIX_ENV_STORE_BYTES", str(4 << 30))))


def key(inputs: dict) -> str:
    """The entry's name: a hash of the install inputs plus uv's settings."""
    settings = {k: v for k, v in sorted(os.environ.items()) if k.startswith("UV_")}
    links = settings.get("UV_FIND_LINKS", "")
    listing = []
    for folder in filter(None, links.split(" ")):
        path = Path(folder)
        if path.is_dir():  # a local folder of releases: what it holds is an input too
            for f in sorted(path.iterdir()):
                st = f.stat()
                listing.append((f.name, st.st_size, st.st_mtime_ns))
    blob = json.dumps({"inputs": inputs, "uv": settings, "links": listing}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Entry:
    """One locked entry: ``path`` is the environment folder, ``fresh`` says it must be built."""

    def __init__(self, root: Path, name: str):
        self.path = root / name
        self.marker = self.path / MARKER
        self.fresh = True

    def freeze(self) -> dict | None:
        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
            return data["packages"] if isinstance(data.get("packages"), dict) else None
        except (OSError, ValueError, KeyError):
            return None

    def keep(self, packages: dict[str, str]) -> None:
        """Mark the built environment complete, with the freeze the suite saw."""
        size = folder_bytes(self.path)
        self.marker.write_text(json.dumps({"packages": packages, "bytes": size,
                                           "built": time.time()}), encoding="utf-8")


@contextmanager
def checkout(root: Path, name: str,
             drop_bytecode: Callable[[Path], None]) -> Iterator[Entry | None]:
    """Hold entry ``name`` for one run; ``None`` when another run holds it.

    An entry that is incomplete, too old or unreadable is emptied first (``fresh``).  The caller
    builds into ``entry.path`` when fresh, and calls ``entry.keep`` to keep it; an entry not
    kept is removed when the run ends.
    """
    root.mkdir(parents=True, exist_ok=True)
    lock = open(root / f"{name}.lock", "a+")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield None
            return
        entry = Entry(root, name)
        try:
            built = json.loads(entry.marker.read_text(encoding="utf-8")).get("built", 0)
        except (OSError, ValueError, AttributeError):
            built = None
        if built is not None and time.time() - built < MAX_AGE and entry.freeze() is not None:
            entry.fresh = False
            os.utime(entry.marker)  # recently used
        else:
            _remove(entry.path, drop_bytecode)
        try:
            yield entry
        finally:
            if not entry.marker.exists():
                _remove(entry.path, drop_bytecode)
    finally:
        lock.close()  # releases the lock
    clean(root, drop_bytecode)


def discard(entry: Entry, drop_bytecode: Callable[[Path], None]) -> None:
    _remove(entry.path, drop_bytecode)


def _remove(path: Path, drop_bytecode: Callable[[Path], None]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    drop_bytecode(path)


def folder_bytes(path: Path) -> int:
    seen, total = set(), 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def clean(root: Path, drop_bytecode: Callable[[Path], None]) -> None:
    """Remove least recently used entries beyond the limits; skip entries in use."""
    most, budget = _limits()
    entries = []
    for marker in root.glob(f"*/{MARKER}"):
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            entries.append((marker.stat().st_mtime, marker.parent, int(data.get("bytes", 0))))
        except (OSError, ValueError, AttributeError):
            continue
    entries.sort(reverse=True)  # newest first
    total = 0
    for count, (_used, path, size) in enumerate(entries, 1):
        total += 2 * size  # the environment and, about as large, its bytecode
        if count <= most and total <= budget:
            continue
        with open(root / f"{path.name}.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # in use: it is recent anyway
            _remove(path, drop_bytecode)  # (the empty lock file stays: another run may
            # hold it open, and a new file under the same name would be a second lock)
