"""bgmatrix sessions: one per cell of matrix/plan.json, plus the project's own jobs.

Thin on purpose: the logic lives in the bgmatrix package, where it is tested, and every
session calls one command, ``bgmatrix <verb>``, through one helper (``bgmatrix()`` below).
Cell sessions need no virtualenv of nox's own (``venv_backend="none"``): the cell runner builds
the cell's environment with uv, and host tools run from the project's locked environment
(``.venv``, which uv owns) via ``uv run``.

    nox                      reproduce the headline cells in a scratch folder, then the site
    nox -l                   every session, with its description
    nox -t headline          the headline cells one by one; -t fa-0.106, -t st-0.27, -t era-...
    nox -s "fa-0.106.0_st-0.27.0_py3.8"
    nox -s sweep -- --tag era-asgi2     every (or every tagged) cell, in parallel, resumable
"""

import os
import shutil
import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))
from bgmatrix.plan.store import load_cells  # noqa: E402  (stdlib only: nox -l stays offline)

nox.needs_version = ">=2024.3.2"
nox.options.sessions = ["reproduce", "report"]
nox.options.error_on_missing_interpreters = False

# The README runs ``.tools/bin/nox`` without activating .tools: the uv installed beside nox is
# then not on PATH, yet every session (and the cell runner under it) runs ``uv``. So put nox's
# own bin folder on PATH when uv is not found otherwise.
if shutil.which("uv") is None:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# Host tools run in the project's .venv, which uv owns; an activated venv (such as .tools)
# would only make every `uv run` warn that VIRTUAL_ENV does not match it.
os.environ.pop("VIRTUAL_ENV", None)

HOST = ["uv", "run", "--quiet", "--frozen", "--extra", "site", "--extra", "test"]


def bgmatrix(session: nox.Session, *args: str) -> None:
    """The one way a session runs a command: ``bgmatrix <verb> ...`` in the project's env."""
    session.run(*HOST, "bgmatrix", *args, external=True)


@nox.session(venv_backend="none")
def reproduce(session: nox.Session) -> None:
    """Re-run the headline cells in a scratch folder; do they reproduce results/? (exit 1 if not)"""
    bgmatrix(session, "reproduce", *session.posargs)


@nox.session(venv_backend="none", default=False)
def headline(session: nox.Session) -> None:
    """Run the headline cells into results/, in parallel; current ones are skipped."""
    bgmatrix(session, "run", "--tag", "headline", *session.posargs)


@nox.session(venv_backend="none", default=False)
def sweep(session: nox.Session) -> None:
    """Run every planned cell (or those with --tag T), in parallel, resuming where it stopped."""
    bgmatrix(session, "run", "--all", *session.posargs)


@nox.session(venv_backend="none", default=False)
def plan(session: nox.Session) -> None:
    """Refresh matrix/plan.json from the package index."""
    bgmatrix(session, "plan", *session.posargs)


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """Generate the site's pages from spec/ and results/, then build it with mkdocs."""
    bgmatrix(session, "report", *session.posargs)


@nox.session(venv_backend="none", default=False)
def serve(session: nox.Session) -> None:
    """Serve the built site on 127.0.0.1:8000."""
    session.run(*HOST, "python", "-m", "http.server", "-b", "127.0.0.1", "-d", "site/_build",
                "8000", external=True)


@nox.session(venv_backend="none", default=False)
def tests(session: nox.Session) -> None:
    """Lint, the layers contract (.importlinter), mypy (mypy.ini), then the project's tests."""
    session.run(*HOST, "ruff", "check", "bgmatrix", "tests", "noxfile.py", "scripts",
                external=True)
    # cli > site | run > plan > shared modules; no cycles (tests/unit/test_layers.py: it can fail)
    session.run(*HOST, "lint-imports", "--no-logo", ".importlinter", external=True)
    session.run(*HOST, "mypy", external=True)  # bgmatrix/, configured in mypy.ini
    # -rs: every skipped test says why, so a skip is never mistaken for a pass.
    session.run(*HOST, "python", "-m", "pytest", "tests/unit", "-rs", *session.posargs,
                external=True)


@nox.session(venv_backend="none", default=False)
def watch(session: nox.Session) -> None:
    """Look for releases newer than the plan, run their cells, summarise changed behaviour."""
    bgmatrix(session, "watch", *session.posargs)


@nox.session(venv_backend="none", default=False)
def shard(session: nox.Session) -> None:
    """Run CI's shard K of N locally (-- run K N --out DIR), or merge shards (-- merge ...)."""
    bgmatrix(session, "shard", *session.posargs)


@nox.session(venv_backend="none", default=False)
def candidate(session: nox.Session) -> None:
    """Run the candidate resolutions (or -- NAME, PATH, wheel, sdist, git+URL) in the suite."""
    bgmatrix(session, "candidates", *session.posargs)


@nox.session(venv_backend="none", default=False)
def wire(session: nox.Session) -> None:
    """Re-run the headline cells (or the cells/tags given) in wire mode: every server, loopback."""
    session.env["BGMATRIX_WIRE"] = "1"
    bgmatrix(session, "run", "--force", *(session.posargs or ["--tag", "headline"]))


def _cell_session(cell: dict) -> None:
    def run_cell(session: nox.Session) -> None:
        bgmatrix(session, "run", cell["id"], *session.posargs)

    pair = f"fastapi {cell['fastapi']} + " if cell.get("fastapi") else ""
    run_cell.__doc__ = f"{pair}starlette {cell['starlette']} on Python {cell['python']}"
    nox.session(run_cell, name=cell["id"], tags=cell["tags"], venv_backend="none",
                default=False)


for _cell in load_cells():
    _cell_session(_cell)
