"""The evidence store: observations kept once, named by the hash of their content.

Most of what a cell observes is identical in hundreds of cells (the same event log, the same
test record), so a result file does not carry it: it names it by a hash, and the object lives
once in the store beside the results, ``<results>/evidence/``.

The hash is SHA-256 over the object's canonical JSON (sorted keys, ASCII, compact), cut to
16 hex digits: 64 bits, for a store of a few thousand objects.

Objects are packed by the first hex digit of their hash into 16 files,
``<results>/evidence/<0-f>.jsonl``. Each line of a pack is one object, and the line is itself
canonical JSON::

    {"key":"<hash>","object":<the object's canonical JSON>}

Lines are sorted by hash, so adding or removing an object is one line of a diff, and a re-run
that observed the same things rewrites nothing. (One small file per object wasted a 4 KiB disk
block on each: the store took twice its content on disk.)

An object never changes once written (its name is its content). Adding objects rewrites a
pack, so it is done under the store's lock held exclusively (`Store.lock`), reading the pack
afresh and replacing it atomically; readers need no lock (a pack is always either the old
file or the new one). A reader checks every object it loads against its hash, so a corrupt or
edited object (or line) is an error naming the pack and the line, never silent evidence; a
pack with a line that cannot be read is never rewritten (nothing is lost), only reported.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from bgmatrix import files, schemas
from bgmatrix.errors import BgmatrixError

HASH_LENGTH = 16
FOLDER = "evidence"
LOCK_NAME = ".lock"  # git-ignored; see Store.lock
PACK_SUFFIX = ".jsonl"
PACKS = "0123456789abcdef"  # one pack per first hex digit of a hash
_KEY = re.compile(f"[0-9a-f]{{{HASH_LENGTH}}}")
_HEAD, _MIDDLE = '{"key":"', '","object":'  # a line: _HEAD <key> _MIDDLE <object> }


class EvidenceError(BgmatrixError):
    """An evidence object is missing, corrupt, or does not match its name."""


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode("ascii")).hexdigest()[:HASH_LENGTH]


def line(key: str, obj: Any) -> str:
    """One pack line: canonical JSON of ``{"key": key, "object": obj}``, newline-terminated."""
    return f"{_HEAD}{key}{_MIDDLE}{canonical(obj)}}}\n"


def pack_name(key: str) -> str:
    return f"{key[0]}{PACK_SUFFIX}"


class _Pack(NamedTuple):
    """One pack as read: each key's line number and line; the numbers of unreadable lines."""

    signature: tuple[int, int, int] | None  # (inode, size, mtime) when read; None: no file
    lines: dict[str, tuple[int, str]]
    bad: tuple[int, ...]


def _parse_pack(path: Path, text: str, signature: tuple[int, int, int] | None) -> _Pack:
    lines: dict[str, tuple[int, str]] = {}
    bad: list[int] = []
    head, middle = len(_HEAD), len(_HEAD) + HASH_LENGTH
    for number, text_line in enumerate(text.splitlines(), 1):
        key = text_line[head:middle]
        if (text_line.startswith(_HEAD) and _KEY.fullmatch(key)
                and text_line.startswith(_MIDDLE, middle) and text_line.endswith("}")
                and pack_name(key) == path.name and key not in lines):
            lines[key] = (number, text_line)
        else:
            bad.append(number)
    return _Pack(signature, lines, tuple(bad))


class Store:
    """The evidence folder beside a results folder; a memo of what was read or written."""

    def __init__(self, results_dir: Path):
        self.folder = Path(results_dir) / FOLDER
        self._memo: dict[str, Any] = {}
        self._checked: set[tuple[str, str]] = set()
        self._packs: dict[str, _Pack] = {}
        self._held: str | None = None  # "shared" or "exclusive" while this store holds the lock

    def path(self, key: str) -> Path:
        """The pack that holds (or would hold) the object ``key``."""
        return self.folder / pack_name(key)

    def _pack(self, path: Path) -> _Pack:
        """The pack at ``path`` as it is now on disk (re-read only when the file changed)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return _Pack(None, {}, ())
        except OSError as exc:
            raise EvidenceError(f"{path}: unreadable evidence pack ({exc})") from None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        known = self._packs.get(path.name)
        if known is not None and known.signature == signature:
            return known
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvidenceError(f"{path}: unreadable evidence pack ({exc})") from None
        pack = _parse_pack(path, text, signature)
        self._packs[path.name] = pack
        return pack

    @staticmethod
    def _refuse_bad(path: Path, pack: _Pack) -> None:
        if pack.bad:
            more = f" (and {len(pack.bad) - 1} more)" if len(pack.bad) > 1 else ""
            raise EvidenceError(f"{path} line {pack.bad[0]}: not an evidence line "
                                f"{{\"key\":\"<hash>\",\"object\":...}}{more} (edited or corrupt)")

    def add(self, objects: Mapping[str, Any]) -> None:
        """Store each ``hash -> object`` not stored yet (an object never changes once written).

        Holds the store's lock exclusively (re-entrant when this store already holds it so) and
        rewrites only the packs that gain a line, each atomically."""
        new = {key: obj for key, obj in objects.items() if key not in self._memo}
        if not new:
            return
        with self.lock(exclusive=True):
            by_pack: dict[str, dict[str, Any]] = {}
            for key, obj in new.items():
                by_pack.setdefault(pack_name(key), {})[key] = obj
            for name, adding in sorted(by_pack.items()):
                path = self.folder / name
                pack = self._pack(path)
                missing = {k: o for k, o in adding.items() if k not in pack.lines}
                if missing:
                    self._refuse_bad(path, pack)  # never drop a line we cannot read
                    lines = {k: text for k, (_, text) in pack.lines.items()}
                    lines.update((k, line(k, o).rstrip("\n")) for k, o in missing.items())
                    self._write(path, lines)
                self._memo.update(adding)

    def _write(self, path: Path, lines: Mapping[str, str]) -> None:
        if lines:
            files.write_text_atomic(path, "".join(lines[k] + "\n" for k in sorted(lines)))
        else:
            path.unlink(missing_ok=True)
        self._packs.pop(path.name, None)

    @property
    def checked(self) -> frozenset[tuple[str, str]]:
        """The (hash, kind) pairs this store has validated."""
        return frozenset(self._checked)

    def trust(self, pairs: set[tuple[str, str]]) -> None:
        """Take (hash, kind) pairs as validated: an object's name is the hash of its content,
        and every read checks that, so a pair that passed against the same schema before
        (``site.model``'s record of them) names the same valid object."""
        self._checked |= pairs

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
        if not _KEY.fullmatch(key):
            raise EvidenceError(f"{key!r} is not an evidence hash")
        path = self.path(key)
        pack = self._pack(path)
        if key not in pack.lines:
            unreadable = (f" ({path} line {pack.bad[0]} cannot be read: edited or corrupt)"
                          if pack.bad else "")
            raise EvidenceError(f"{path}: evidence object is missing: {key}{unreadable}")
        number, text = pack.lines[key]
        try:
            obj = json.loads(text)["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EvidenceError(f"{path} line {number}: unreadable evidence object {key} "
                                f"({exc})") from None
        if digest(obj) != key:
            raise EvidenceError(f"{path} line {number}: content does not match its hash "
                                f"{key} (edited or corrupt)")
        self._memo[key] = obj
        return obj

    @contextmanager
    def lock(self, exclusive: bool = False) -> Iterator[None]:
        """Writers of results hold the store exclusively while they add objects and then write
        the result that names them (packs are rewritten whole, so adders take turns); garbage
        collection holds it exclusively too, so it never deletes an object whose result is
        about to be written. Re-entrant within one store; released when the process dies."""
        if self._held == "exclusive" or (self._held == "shared" and not exclusive):
            yield
            return
        if self._held == "shared":
            raise RuntimeError("the evidence store is held shared; it cannot become exclusive")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            self._held = "exclusive" if exclusive else "shared"
            yield
        finally:
            self._held = None
            os.close(fd)

    def pack_paths(self) -> list[Path]:
        return [self.folder / f"{digit}{PACK_SUFFIX}" for digit in PACKS
                if (self.folder / f"{digit}{PACK_SUFFIX}").is_file()]

    def keys(self) -> set[str]:
        """Every hash the packs hold a line for (the content is checked by `get`)."""
        return {key for path in self.pack_paths() for key in self._pack(path).lines}

    def remove_unreferenced(self, referenced: set[str]) -> int:
        """Delete objects no result names any more; returns how many went. A pack with a line
        that cannot be read is left as it is (it is reported by the read that meets it)."""
        gone = 0
        with self.lock(exclusive=True):
            for path in self.pack_paths():
                pack = self._pack(path)
                unused = set(pack.lines) - referenced
                if not unused or pack.bad:
                    continue
                self._write(path, {k: text for k, (_, text) in pack.lines.items()
                                   if k not in unused})
                for key in unused:
                    self._memo.pop(key, None)
                gone += len(unused)
        return gone


def validate(obj: Any, kind: str, where: str) -> None:
    """Check one evidence object of ``kind`` (a ``$defs`` name of schema/evidence.schema.json)."""
    found = schemas.problem(obj, "evidence", kind)
    if found is not None:
        raise EvidenceError(f"{where}: {kind}: {found}")
