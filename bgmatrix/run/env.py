"""What every program that works inside a cell's environment shares: uv, a child process
run with its output captured, the redacted tail of that output, and the package freeze.

The cell runner (:mod:`bgmatrix.run.runner`), wire mode and the candidates all import these
from here, so none of them reaches into another's private helpers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bgmatrix.errors import BgmatrixError
from bgmatrix.errors import Interrupted as _Interrupted

#: Installed beside the suite tools and the wire server: sdists need today's build tools.
BUILD_TOOLS = ("setuptools", "wheel")

_MESSAGE_LIMIT = 3000  # characters of tool output kept in a result: the tail says why
_URL = re.compile(r"https?://\S+")

#: Exit codes of a child that Ctrl-C stopped: killed by SIGINT, the shell's 130, and
#: pytest's "interrupted" (2, checked together with its KeyboardInterrupt line).
SIGINT_CODES = (-signal.SIGINT, 128 + signal.SIGINT)


class CellError(BgmatrixError):
    """The cell cannot be run; ``state`` is the cell state to record."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state
        self.message = message


class Interrupted(_Interrupted):
    """A child process was stopped by Ctrl-C: the cell has no result, not a failed one."""


def uv() -> str:
    """The path of the uv executable."""
    found = shutil.which("uv")
    if not found:
        raise CellError("harness-error", "uv is not installed: pip install uv")
    return found


def uv_env() -> dict[str, str]:
    # Never fetch an interpreter behind the user's back; keep uv quiet about link modes.
    return dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")


def run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Run ``cmd``; return its exit code and its combined output.  Raises on timeout."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=env
    )
    out = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode in SIGINT_CODES or (proc.returncode == 2 and "KeyboardInterrupt" in out):
        raise Interrupted(" ".join(cmd[:3]))
    return proc.returncode, out


def tail(text: str) -> str:
    """The informative end of a tool's output; addresses are redacted (they name hosts)."""
    text = _URL.sub("<url>", text.strip())
    return text if len(text) <= _MESSAGE_LIMIT else "…" + text[-_MESSAGE_LIMIT:]


def freeze(python: Path) -> dict[str, str]:
    """The packages installed for ``python``, by lower-case name."""
    rc, out = run([uv(), "pip", "freeze", "--python", str(python)], 60, uv_env())
    packages = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            packages[name.strip().lower()] = version.strip()
    return packages


def install_beside(python: Path, cutoff: str | None, requirements: Sequence[str], target: Path,
                   timeout: float, exempt: Sequence[str] = ()) -> tuple[int, str]:
    """Install ``requirements`` as of ``cutoff`` into ``target`` (``--target``), every package
    of ``python``'s environment pinned at its version by a constraints file, so nothing the cell
    holds can move and the cell's own folder is never written. Returns uv's exit code and
    output (a timeout is exit code 1 with a sentence); the caller puts ``target`` on
    ``PYTHONPATH``. Build tools, and the packages ``exempt`` names, are exempt from the
    cutoff, as the build tools are in the cell's own install."""
    cmd = [uv(), "pip", "install", "-q", "--python", str(python), "--target", str(target)]
    if cutoff:
        cmd += ["--exclude-newer", cutoff]
        for tool in (*BUILD_TOOLS, *exempt):
            cmd += ["--exclude-newer-package", f"{tool}=false"]
    with tempfile.TemporaryDirectory(prefix="bgmatrix-pins-") as tmp:
        pins = Path(tmp) / "constraints.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(freeze(python).items())))
        cmd += ["--constraint", str(pins), *requirements]
        try:
            return run(cmd, timeout, uv_env())
        except subprocess.TimeoutExpired:
            return 1, f"installing {' '.join(requirements)} did not finish in {timeout:g}s"
