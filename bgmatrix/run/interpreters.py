"""Finding a CPython X.Y on this machine, never downloading one.

Looked for, in order: pyenv's install folder (its shims answer only for the global version,
so they are not trusted), then ``pythonX.Y`` on PATH, then uv's own discovery.  Every
candidate is run once to confirm its version; a missing interpreter is ``None`` and becomes a
visible ``no-interpreter`` cell, never a crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

from packaging.version import InvalidVersion, Version


def _pyenv_candidates(version: str) -> list[Path]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for folder in root.glob(f"{version}.*"):
        try:
            patch = Version(folder.name)
        except InvalidVersion:
            continue  # e.g. "3.8-dev", virtualenvs
        exe = folder / "bin" / f"python{version}"
        if exe.is_file():
            found.append((patch, exe))
    return [exe for _, exe in sorted(found, reverse=True)]


def _uv_candidate(version: str) -> list[Path]:
    uv = shutil.which("uv")
    if not uv:
        return []
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    proc = subprocess.run(
        [uv, "python", "find", "--no-project", version],
        capture_output=True, text=True, env=env, timeout=30,
    )
    return [Path(proc.stdout.strip())] if proc.returncode == 0 and proc.stdout.strip() else []


def _reports(exe: Path, version: str) -> bool:
    try:
        proc = subprocess.run(
            [str(exe), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == version


@cache
def find(version: str) -> Path | None:
    """Path of a working CPython ``version`` ("3.8"), or None when this machine has none."""
    on_path = shutil.which(f"python{version}")
    candidates = _pyenv_candidates(version) + ([Path(on_path)] if on_path else [])
    for exe in candidates + _uv_candidate(version):
        if _reports(exe, version):
            return exe
    return None
