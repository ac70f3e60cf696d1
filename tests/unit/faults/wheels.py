"""Tiny wheels of fake releases, written with zipfile: dist-info METADATA, WHEEL and RECORD.

A fake ``starlette`` (or ``fastapi``) logs every import to a side-effect file, one line
``<name> <version> <suite|probe> <pid> <parent pid>``, so a test can count how often a cell
really ran and which sweep ran it; and it can misbehave on import in the ways real releases
have: raise, or block until a gate file appears (forever, when nobody creates it).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

WHEEL = "Wheel-Version: 1.0\nGenerator: bgmatrix-faults\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel(folder: Path, name: str, version: str, files: dict[str, str],
          requires: tuple[str, ...] = ()) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` holding ``files`` into ``folder``."""
    dist = f"{name}-{version}.dist-info"
    members = {path: text.encode() for path, text in files.items()}
    members[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    ).encode()
    members[f"{dist}/WHEEL"] = WHEEL.encode()
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in members.items()]
    members[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


_PROLOGUE = """\
import os as _os
import sys as _sys

__version__ = {version!r}
_ROLE = "probe" if _sys.argv and _sys.argv[0] == "-c" else "suite"
with open({log!r}, "a") as _fh:
    _fh.write("{name} {version} %s %d %d\\n" % (_ROLE, _os.getpid(), _os.getppid()))
"""

_GATE = """\
import time as _time

while _ROLE in {roles!r} and not _os.path.exists({gate!r}):  # until the gate opens, or forever
    _time.sleep(0.02)
"""

_RAISE = """\
raise RuntimeError({message!r})
"""


def fake_release(folder: Path, name: str, version: str, log: Path, *,
                 gate: Path | None = None, block_in: tuple[str, ...] = ("suite",),
                 raises: str | None = None) -> Path:
    """A wheel of a fake ``name`` release: logs its import, then, if asked, blocks on ``gate``
    when imported by the spec suite or the runner's import probe (``block_in``), or raises
    ``RuntimeError(raises)``.  It has no other modules, so the spec suite cannot collect its
    tests and a cell of it ends as a recorded harness-error."""
    source = _PROLOGUE.format(name=name, version=version, log=str(log))
    if gate is not None:
        source += _GATE.format(gate=str(gate), roles=tuple(block_in))
    if raises is not None:
        source += _RAISE.format(message=raises)
    return wheel(folder, name, version, {f"{name}/__init__.py": source})


def _lines(log: Path, name: str, role: str) -> list[list[str]]:
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [r for r in rows if len(r) == 5 and r[0] == name and r[2] == role]


def imports(log: Path, name: str = "starlette", role: str = "suite") -> dict[str, int]:
    """How many times each version of ``name`` was imported in ``role`` (suite runs = runs)."""
    counts: dict[str, int] = {}
    for row in _lines(log, name, role):
        counts[row[1]] = counts.get(row[1], 0) + 1
    return counts


def runners(log: Path, name: str = "starlette", role: str = "suite") -> dict[str, list[int]]:
    """The parent processes (the sweeps) that imported each version of ``name``."""
    out: dict[str, list[int]] = {}
    for row in _lines(log, name, role):
        out.setdefault(row[1], []).append(int(row[4]))
    return out
