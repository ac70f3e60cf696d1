"""Writing and reading the project's files: the two ways every file kind is handled.

A write is atomic (a temporary file in the same folder, flushed, then ``os.replace``), so a
process killed at any moment leaves the old file or the new one, never half of one. A read of
an optional, schema-described file gives None when it does not exist, and otherwise either
valid data or one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bgmatrix import schemas
from bgmatrix.errors import BgmatrixError


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes private files; results and plans are shared data
        os.replace(tmp, path)
    except BaseException:
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
    found = schemas.problem(data, schema)
    if found is not None:
        raise error(f"{path}: {found}")
    return data
