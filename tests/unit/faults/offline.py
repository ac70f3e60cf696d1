"""An offline cell world: fake releases served to uv from a local folder, the suite's tools
linked from the host's own pytest, a private work folder and uv cache; and real processes
driven with deadlines (bounded polling, never a sleep taken as proof).

Nothing here reaches the network: uv gets ``UV_NO_INDEX=1`` and ``UV_FIND_LINKS=<folder>``,
and the "no network" cases point every proxy variable at a dead port on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bgmatrix.run import interpreters, runner
from bgmatrix.spec import ROOT

PYTHON = "3.11"  # the host's own version: always present where these tests run
#: Nothing listens on the discard port of the loopback interface: every connection is refused.
DEAD_PROXY = "http://127.0.0.1:9"
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
#: The host packages that make up the suite's tools (pytest and what it imports on 3.11).
TOOL_MODULES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py")


def starlette_cell(cell_id: str, version: str, python: str = PYTHON) -> dict:
    """A Starlette-only cell outside the plan (run in-process through runner.run_cell)."""
    return {"id": cell_id, "kind": "starlette", "fastapi": None, "starlette": version,
            "python": python, "cutoff": None, "in_declared_range": None, "tags": []}


class World:
    """Folders of one offline world under ``root``; ``env()`` is what a runner needs."""

    def __init__(self, root: Path):
        self.root = root
        self.links = root / "links"  # the wheels uv may install, and nothing else
        self.work = root / "work"  # BGMATRIX_WORK: environments, locks, the tools folder
        self.cache = root / "uv-cache"  # fake releases never enter the user's uv cache
        self.log = root / "imports.log"  # one line per import of a fake release
        self.gates = root / "gates"
        for folder in (self.links, self.work, self.cache, self.gates):
            folder.mkdir(parents=True, exist_ok=True)

    def uv_vars(self) -> dict[str, str]:
        return {"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(self.links),
                "UV_CACHE_DIR": str(self.cache), "UV_PYTHON_DOWNLOADS": "never"}

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a runner process (a sweep started with ``python -m``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
        env.update(self.uv_vars(), BGMATRIX_WORK=str(self.work), PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def enter(self, mp: pytest.MonkeyPatch) -> None:
        """Make this process's runner use the world (for in-process runner.run_cell)."""
        for key in [k for k in os.environ if k.startswith("UV_")]:
            mp.delenv(key)
        for key, value in self.uv_vars().items():
            mp.setenv(key, value)
        mp.setattr(runner, "WORK_DIR", self.work)

    def gate(self, name: str) -> Path:
        return self.gates / name


def dead_network_env(root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default os.environ) with every proxy pointing at a dead port on 127.0.0.1,
    no proxy exemptions, no local index, a private uv cache and no uv retries."""
    env = {k: v for k, v in (base or os.environ).items()
           if not k.startswith("UV_") and k.upper() != "NO_PROXY"}
    for var in _PROXY_VARS:
        env[var] = env[var.lower()] = DEAD_PROXY
    env.update(UV_CACHE_DIR=str(root / "uv-cache"), UV_HTTP_RETRIES="0",
               UV_PYTHON_DOWNLOADS="never", PYTHONUNBUFFERED="1")
    return env


def link_host_tools(target: Path) -> None:
    """Fill a --target folder with links to the host's pytest and its imports."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TOOL_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (target / source.name).symlink_to(source)


def install_tools(work: Path, python: str = PYTHON) -> Path:
    """Create the suite's shared tools folder in ``work`` without an index: the runner's own
    code picks the folder and its key; only uv's ``pip install --target`` is replaced."""
    exe = interpreters.find(python)
    assert exe is not None, f"no CPython {python} for the fault suite"

    def fake_install(cmd: list[str], timeout: float, env: dict | None = None):
        link_host_tools(Path(cmd[cmd.index("--target") + 1]))
        return 0, ""

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "WORK_DIR", work)
        mp.setattr(runner, "_run", fake_install)
        return runner.suite_tools(exe)


# -- real processes ------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               proc: subprocess.Popen | None = None) -> object:
    """Poll ``predicate`` until it is true; fail after ``timeout`` s (or if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Runner:
    """A ``python -m <module> ...`` process in its own process group, its output in files."""

    def __init__(self, folder: Path, name: str, args: list[str], env: dict[str, str]):
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout_path = folder / f"{name}.out"
        self.stderr_path = folder / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    @property
    def output(self) -> str:
        return (self.stdout_path.read_text(errors="replace")
                + self.stderr_path.read_text(errors="replace"))

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout}s:\n{self.output[-3000:]}") from None

    def stop(self) -> None:
        """Teardown: make sure the group is gone (our own process group only)."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(30)
        else:  # the leader exited; children it left behind are still in the group
            self.signal_group(signal.SIGKILL)


# -- a private copy of the project --------------------------------------------------------------

#: What the command-line tools read: code, spec, schema, plan, the in-cell suite, the site's
#: sources, the candidate patches and the noxfile.
PROJECT_PARTS = ("bgmatrix", "spec", "schema", "matrix", "tests/spec", "site/docs",
                 "site/mkdocs.yml", "candidates", "noxfile.py", "pyproject.toml")


def project_copy(folder: Path) -> Path:
    """A copy of the project whose results/ and site/ nobody else writes to, so a test can
    tell that a command wrote nothing there while other people work in the real tree.
    Run commands in it with ``cwd=folder`` and ``PYTHONPATH=folder``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in PROJECT_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=ignore)
        elif source.is_file():
            (folder / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / part)
    for built in ("site/_build", "site/generated"):  # a published site, as a marker
        (folder / built).mkdir(parents=True, exist_ok=True)
        (folder / built / "index.html").write_text("previously published\n")
    (folder / "results").mkdir(exist_ok=True)
    return folder
