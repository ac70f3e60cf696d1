"""Writing and reading the project's files: the two ways every file kind is handled.

A write is atomic (a temporary file in the same folder, flushed, then ``os.replace``), so a
process killed at any moment leaves the old file or the new one, never half of one. A read of
an optional, schema-described file gives None when it does not exist, and otherwise either
valid data or one line naming the file and what is wrong with it.

Standard library only when imported (the schema checker is imported where a read needs it):
the plan store writes through here, and nox imports that store in its own environment.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from bgmatrix.errors import BgmatrixError


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until the block has finished.

    For steps that must not be cut in half: creating a temporary file and remembering its name
    (a Ctrl-C between the two would leave it behind), or the two renames that swap a build in
    (between them the previous build is gone and the new one not yet there). The held signal
    is then delivered as it would have been. Outside the main thread, where Python runs no
    signal handlers, this holds nothing and needs to hold nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda *args: got.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if got:
            if callable(previous):
                previous(*got[0])
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless ``path`` already holds it; True if it wrote. Committed
    data is rewritten only when it changed, so a re-run that saw the same thing leaves every
    byte (and the file's mtime) alone."""
    try:
        if Path(path).read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: written anew
    write_text_atomic(Path(path), text)
    return True


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with interrupts_held():  # the file and the name that cleans it up exist together
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes private files; results and plans are shared data
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def read_checked(path: Path, schema: str, error: type[BgmatrixError], what: str) -> Any:
    """The JSON at ``path`` if it is valid against schema ``schema``; None if there is no file;
    ``error("<path>: ...")`` naming ``what`` the file should be otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path}: unreadable {what} ({exc})") from None
    from bgmatrix import schemas  # jsonschema: not at import time (see the module's docstring)

    found = schemas.problem(data, schema)
    if found is not None:
        raise error(f"{path}: {found}")
    return data


@lru_cache(maxsize=8)
def _read_version(path: str, stamp: int, schema: str, error: type[BgmatrixError],
                  what: str) -> Any:
    return read_checked(Path(path), schema, error, what)


def read_checked_once(path: Path, schema: str, error: type[BgmatrixError], what: str) -> Any:
    """:func:`read_checked`, read and validated once per version of the file (its
    modification time): for the records several pages of one build read. Callers must not
    change what it returns."""
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    # a class is hashable; mypy takes the hash of the exception's instances for it
    return _read_version(str(path), stamp, schema, error, what)  # type: ignore[arg-type]
