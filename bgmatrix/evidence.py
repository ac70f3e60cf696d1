"""The evidence store: observations kept once, named by the hash of their content.

Most of what a cell observes is identical in hundreds of cells (the same event log, the same
test record), so a result file does not carry it: it names it by a hash, and the object lives
once in ``<results>/evidence/<hash>.json``. An object never changes once written (its name is
its content), so writing is create-if-absent and needs no lock; a reader checks every object
it loads against its name, so a corrupt or edited object is an error, never silent evidence.

The hash is SHA-256 over the object's canonical JSON (sorted keys, ASCII, compact), cut to
16 hex digits: 64 bits, for a store of a few thousand objects.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bgmatrix import files, schemas
from bgmatrix.errors import BgmatrixError

HASH_LENGTH = 16
FOLDER = "evidence"
LOCK_NAME = ".lock"  # git-ignored; see Store.lock


class EvidenceError(BgmatrixError):
    """An evidence object is missing, corrupt, or does not match its name."""


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode("ascii")).hexdigest()[:HASH_LENGTH]


def dumps(obj: Any) -> str:
    """The stored form: indented so that an object reads well where people browse files."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=True, indent=1) + "\n"


class Store:
    """The evidence folder beside a results folder; a memo of what was read or written."""

    def __init__(self, results_dir: Path):
        self.folder = Path(results_dir) / FOLDER
        self._memo: dict[str, Any] = {}
        self._checked: set[tuple[str, str]] = set()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def add(self, objects: Mapping[str, Any]) -> None:
        """Store each ``hash -> object`` not stored yet (an object never changes once written)."""
        for key, obj in objects.items():
            if key not in self._memo:
                path = self.path(key)
                if not path.is_file():
                    files.write_text_atomic(path, dumps(obj))  # same bytes if two race
                self._memo[key] = obj

    def get_checked(self, key: str, kind: str, where: str) -> Any:
        """:meth:`get`, and the object checked against its kind once per store."""
        obj = self.get(key)
        if (key, kind) not in self._checked:
            validate(obj, kind, where)
            self._checked.add((key, kind))
        return obj

    def get(self, key: str) -> Any:
        if key in self._memo:
            return self._memo[key]
        path = self.path(key)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EvidenceError(f"{path}: evidence object is missing") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise EvidenceError(f"{path}: unreadable evidence object ({exc})") from None
        if digest(obj) != key:
            raise EvidenceError(f"{path}: content does not match its hash (edited or corrupt)")
        self._memo[key] = obj
        return obj

    @contextmanager
    def lock(self, exclusive: bool = False) -> Iterator[None]:
        """Writers of results hold the store shared while they add objects and then the result
        that names them; garbage collection holds it exclusive, so it never deletes an object
        whose result is about to be written. Released when the process dies."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def keys(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        return {p.stem for p in self.folder.glob("*.json")}

    def remove_unreferenced(self, referenced: set[str]) -> int:
        """Delete objects no result names any more; returns how many went."""
        gone = 0
        for key in sorted(self.keys() - referenced):
            self.path(key).unlink(missing_ok=True)
            self._memo.pop(key, None)
            gone += 1
        return gone


def validate(obj: Any, kind: str, where: str) -> None:
    """Check one evidence object of ``kind`` (a ``$defs`` name of schema/evidence.schema.json)."""
    found = schemas.problem(obj, "evidence", kind)
    if found is not None:
        raise EvidenceError(f"{where}: {kind}: {found}")
