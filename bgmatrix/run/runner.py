"""Running the spec suite in one cell: a fresh environment with uv, the pair installed as of
its cutoff date, the suite's own tools installed apart, then one pytest run inside it.

Whatever goes wrong becomes a result too: every failure is a cell state with its message, so
a sweep never stops on one cell and a reader always sees why a cell has no verdicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

from bgmatrix import paths, results, spec
from bgmatrix.run import interpreters
from bgmatrix.run.env import (  # shared with wire mode and the candidates; runner keeps the names
    BUILD_TOOLS,
    SIGINT_CODES,
    CellError,
    Interrupted,
    freeze,
    tail,
    uv_env,
)
from bgmatrix.run.env import run as _run
from bgmatrix.run.env import uv as _uv
from bgmatrix.spec import ROOT

SUITE_DIR = ROOT / "tests" / "spec"
WORK_DIR = paths.WORK_DIR  # the tools' one work folder, shared with the site (bgmatrix.paths)

#: The suite's own tools, pinned and installed apart from the release under test, so that a
#: 2019 cell runs the same harness as a 2026 one.  pytest 8.3 is the newest supporting 3.8.
#: exceptiongroup 1.3 (pytest's choice on Python < 3.11) imports names that the
#: typing_extensions of 2021-2022 cells lack, which would break pytest itself there.
SUITE_TOOLS = ("pytest==8.3.5", "exceptiongroup==1.2.2; python_version < '3.11'")

INSTALL_TIMEOUT = 600  # seconds; a cold cache on a slow link can need minutes
#: Seconds for the whole suite (each scenario has its own 10 s budget); the fault tests
#: shorten it through the environment.
SUITE_TIMEOUT = int(os.environ.get("BGMATRIX_SUITE_TIMEOUT", "300"))
PROBE_TIMEOUT = 120  # seconds to import the framework alone

#: What uv says when it could not connect at all (no network, a dead proxy, no DNS), as
#: opposed to an index that answered "no such version".
_UNREACHABLE = re.compile(
    r"error sending request|tcp connect error|connection refused|dns error|"
    r"failed to lookup address|network is unreachable|tunnel error|connection reset",
    re.IGNORECASE,
)


@cache
def suite_hash() -> str:
    """A short hash of the in-cell suite's source: results from another suite are stale."""
    digest = hashlib.sha256()
    for path in sorted(SUITE_DIR.glob("*.py")) + [SUITE_DIR / "pytest.ini",
                                                  ROOT / "bgmatrix" / "vocabulary.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@cache
def uv_version() -> str:
    return _run([_uv(), "--version"], timeout=30)[1].strip().removeprefix("uv ")


def requirements(cell: Mapping[str, Any]) -> list[str]:
    reqs = []
    if cell.get("fastapi"):
        reqs.append(f"fastapi=={cell['fastapi']}")
    if cell.get("starlette"):
        reqs.append(f"starlette=={cell['starlette']}")
    return reqs


def build_env(cell: Mapping[str, Any], env_dir: Path, install: list[str] | None = None) -> Path:
    """Create ``env_dir`` for ``cell`` and return its interpreter.

    The pair is installed with every other package resolved as of the cell's cutoff (the pair
    itself exempt); ``install`` replaces the pair with other requirements (candidate builds).
    """
    exe = interpreters.find(cell["python"])
    if exe is None:
        raise CellError(
            "no-interpreter",
            f"no CPython {cell['python']} on this machine (looked in pyenv, PATH and uv's "
            "discovery; interpreters are never downloaded)",
        )
    shutil.rmtree(env_dir, ignore_errors=True)
    env = uv_env()
    rc, out = _run([_uv(), "venv", "-q", "--no-project", "-p", str(exe), str(env_dir)], 120, env)
    if rc:
        raise CellError("install-error", "uv venv failed: " + tail(out))
    python = env_dir / "bin" / "python"
    cmd = [_uv(), "pip", "install", "-q", "--python", str(python)]
    if cell.get("cutoff"):
        cmd += ["--exclude-newer", cell["cutoff"]]
        for name in ("fastapi", "starlette"):
            if cell.get(name):
                cmd += ["--exclude-newer-package", f"{name}=false"]
        # Releases shipped only as sdists (Starlette 0.9.x) declare build tools newer than
        # anything on the index at their cutoff; build tools never reach the environment.
        for name in BUILD_TOOLS:
            cmd += ["--exclude-newer-package", f"{name}=false"]
    try:
        rc, out = _run(cmd + (install or requirements(cell)), INSTALL_TIMEOUT, env)
    except subprocess.TimeoutExpired:
        raise CellError("install-error", f"install did not finish in {INSTALL_TIMEOUT}s") from None
    if rc:
        unreachable = "package index unreachable: " if _UNREACHABLE.search(out) else ""
        raise CellError("install-error", unreachable + tail(out))
    link_suite_tools(python, suite_tools(exe))
    return python


def suite_tools(exe: Path) -> Path:
    """A folder with the suite's tools for this interpreter, built once and shared by cells.

    Installing pytest into every cell would cost a uv call per cell; a shared ``--target``
    folder, linked in after the cell's own site-packages, costs nothing after the first cell,
    and the cell's own packages still win any name clash.
    """
    version = subprocess.run([str(exe), "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    key = hashlib.sha256((version + "\0".join(SUITE_TOOLS)).encode()).hexdigest()[:12]
    folder = WORK_DIR / "tools" / key
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        rc, out = _run([_uv(), "pip", "install", "-q", "--python", str(exe), "--target",
                        str(staging), *SUITE_TOOLS], INSTALL_TIMEOUT, uv_env())
        if rc:
            raise CellError("install-error", "installing the suite's tools failed: " + tail(out))
        try:
            staging.rename(folder)  # atomic: a parallel cell may have won the race
        except OSError:
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def link_suite_tools(python: Path, tools: Path) -> None:
    """Append ``tools`` to the cell's import path with a .pth file."""
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(site) / "bgmatrix_suite_tools.pth").write_text(str(tools) + "\n")


_PROBE = (
    "import json, platform, sys\n"
    "mods = sys.argv[1:]\n"
    "info = {'python': platform.python_version()}\n"
    "for m in mods:\n"
    "    mod = __import__('importlib').import_module(m)\n"
    "    info[m] = getattr(mod, '__version__', None)\n"
    "print(json.dumps(info))\n"
)


def probe(python: Path, cell: Mapping[str, Any]) -> dict:
    """Import the framework alone, to tell an import-error from a broken suite run."""
    # starlette.applications, not just the package: some releases (0.10.x) fail there without
    # an optional dependency, which no application can get past.
    mods = ["starlette.applications"] + (["fastapi"] if cell["kind"] != "starlette" else [])
    try:
        proc = subprocess.run([str(python), "-c", _PROBE, *mods], capture_output=True,
                              text=True, errors="replace", timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CellError("timeout", f"importing {' and '.join(mods)} did not finish in "
                        f"{PROBE_TIMEOUT}s") from None
    if proc.returncode in SIGINT_CODES:
        raise Interrupted("import probe")
    if proc.returncode:
        raise CellError("import-error", tail(proc.stderr + proc.stdout))
    # Old releases print deprecation notices on import; the probe's answer is the last line.
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_env(**extra: str) -> dict[str, str]:
    """A minimal, reproducible environment for a test run inside a cell: nothing of the
    host's leaks in but PATH and HOME; no bytecode files; a fixed hash seed."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    env.update(extra)
    return env


def run_suite(
    python: Path, cell: Mapping[str, Any], out_file: Path
) -> tuple[int, list[dict], dict]:
    """Run tests/spec in the cell; return pytest's exit code, the records and the session."""
    out_file.unlink(missing_ok=True)
    env = child_env(BGMATRIX_KIND=cell["kind"])
    if cell["kind"] == "starlette":
        env["BGMATRIX_ONLY_CLAUSES"] = ",".join(spec.starlette_level())
    cmd = [str(python), "-m", "pytest", "-q", "-c", str(SUITE_DIR / "pytest.ini"),
           "--rootdir", str(SUITE_DIR), str(SUITE_DIR), "--bgmatrix-out", str(out_file)]
    try:
        rc, output = _run(cmd, SUITE_TIMEOUT, env)
    except subprocess.TimeoutExpired:
        rc, output = -1, f"the suite did not finish within {SUITE_TIMEOUT}s"
    records, session = [], {}
    if out_file.exists():
        for line in out_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill; the test is reported missing below
            if "session" in data:
                session = data["session"]
            else:
                records.append(data)
    session["output"] = output
    return rc, records, session


def result_for(
    cell: Mapping[str, Any],
    state: str,
    message: str | None,
    provenance: dict,
    records: list[dict] | None = None,
) -> results.Result:
    records = sorted(records or [], key=lambda r: r["test"])
    kind = "starlette" if cell["kind"] == "starlette" else "fastapi"
    return {
        "schema_version": results.SCHEMA_VERSION,
        "cell": {
            "id": cell["id"],
            "kind": cell["kind"],
            "fastapi": cell.get("fastapi"),
            "starlette": cell.get("starlette"),
            "python": cell["python"],
            "cutoff": cell.get("cutoff"),
            "in_declared_range": cell.get("in_declared_range"),
            "candidate": cell.get("candidate"),
        },
        "state": state,
        "message": message,
        "provenance": provenance,
        "clauses": results.aggregate(records, spec.load(), kind) if state == "ok" or records
        else {},
        "tests": cast(list[results.TestRecord], records),
    }


def current_methods() -> dict[str, str]:
    """The hash of each evidence source's method as this checkout has it, so that a write can
    mark a source it carries over (not re-measured) as stale when its method changed."""
    from bgmatrix.run import wire  # imported here: only its hash is needed, not httpx's client

    return {"wire": wire.wire_hash()}


def base_provenance() -> dict:
    """What every result records of how it was measured. Nothing here may differ between two
    runs that observed the same thing: times and the host's tools go to the run record."""
    return {
        "spec_version": spec.spec_version(),
        "suite_hash": suite_hash(),
        "tools": {},
    }


@cache
def implementation(exe: str) -> str:
    """The interpreter's implementation (CPython, PyPy): with its version, all a result says of
    the interpreter; its path belongs to one machine."""
    proc = subprocess.run([exe, "-c", "import platform; print(platform.python_implementation())"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() or "unknown"


def run_cell(cell: Mapping[str, Any], install: list[str] | None = None,
             wire_mode: bool | None = None) -> results.Result:
    """Run one cell end to end and return its (validated) result; never raises CellError.

    With ``wire_mode`` (default: BGMATRIX_WIRE=1) the cell's apps are also observed through a
    real server on loopback, recorded under ``wire`` as a second evidence source.
    """
    if wire_mode is None:
        wire_mode = os.environ.get("BGMATRIX_WIRE") == "1"
    observed = None
    provenance = base_provenance()
    # A private folder per run: a benchmark or a test may run the same cell as a sweep.
    (WORK_DIR / "envs").mkdir(parents=True, exist_ok=True)
    env_dir = Path(tempfile.mkdtemp(prefix=f"{cell['id']}.", dir=WORK_DIR / "envs"))
    try:
        python = build_env(cell, env_dir, install)
        packages = freeze(python)
        rc, records, session = run_suite(python, cell, env_dir / "records.jsonl")
        if wire_mode:
            from bgmatrix.run import wire  # imported here: only wire mode needs httpx

            observed = wire.observe(python, dict(cell))
        if rc != -1 and (rc != 0 or not records):  # (-1: the suite timed out; say so)
            probe(python, cell)  # a release that cannot even be imported is an import-error
        provenance.update(
            python=session.get("python"),
            implementation=implementation(str(interpreters.find(cell["python"]))),
            fastapi=packages.get("fastapi"),
            starlette=packages.get("starlette"),
            packages=packages,
            suite_tools=list(SUITE_TOOLS),
        )
        provenance["tools"]["pytest"] = session.get("pytest", "?")
        state, message = _suite_state(rc, records, session)
        result = result_for(cell, state, message, provenance, records)
        if observed is not None:
            result["wire"] = observed
    except CellError as exc:
        result = result_for(cell, exc.state, exc.message, provenance)
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)
    if result["message"]:  # a traceback names the run's private folder: the same failure
        result["message"] = result["message"].replace(str(env_dir), ENV_PLACEHOLDER)  # twice
    results.validate(result, cell["id"])
    return result


#: What a message says instead of the run's private environment folder (a random name), so that
#: the same failure is the same text in every run.
ENV_PLACEHOLDER = "<cell-env>"


def _suite_state(rc: int, records: list[dict], session: dict) -> tuple[str, str | None]:
    if rc == -1:
        return "timeout", session["output"]
    broken = [r for r in records if r["outcome"] == "harness-error"]
    if rc == 0 and not broken and "exitstatus" in session:
        return "ok", None
    if broken:
        first = broken[0]
        return "harness-error", tail(
            f"{len(broken)} test(s) broke; first: {first['test']}: {first['error']}"
        )
    return "harness-error", tail(f"pytest exited {rc}: " + session["output"])
