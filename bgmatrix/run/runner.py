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
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any, cast

from bgmatrix import paths, results, spec
from bgmatrix.run import envstore, interpreters
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


def _interpreter(cell: Mapping[str, Any]) -> Path:
    exe = interpreters.find(cell["python"])
    if exe is None:
        raise CellError(
            "no-interpreter",
            f"no CPython {cell['python']} on this machine (looked in pyenv, PATH and uv's "
            "discovery; interpreters are never downloaded)",
        )
    return exe


def install_args(cell: Mapping[str, Any], install: list[str] | None = None) -> list[str]:
    """What ``uv pip install`` gets after ``--python``: the cutoff, its exemptions and the
    requirements."""
    cmd = []
    if cell.get("cutoff"):
        cmd += ["--exclude-newer", cell["cutoff"]]
        for name in ("fastapi", "starlette"):
            if cell.get(name):
                cmd += ["--exclude-newer-package", f"{name}=false"]
        # Releases shipped only as sdists (Starlette 0.9.x) declare build tools newer than
        # anything on the index at their cutoff; build tools never reach the environment.
        for name in BUILD_TOOLS:
            cmd += ["--exclude-newer-package", f"{name}=false"]
    return cmd + (install or requirements(cell))


def env_inputs(cell: Mapping[str, Any]) -> dict:
    """Everything that decides a cell's environment (the store's key, with uv's settings)."""
    exe = _interpreter(cell)
    return {"python": os.path.realpath(exe), "version": _interpreter_version(str(exe)),
            "install": install_args(cell), "uv": uv_version(), "tools": list(SUITE_TOOLS)}


def build_env(cell: Mapping[str, Any], env_dir: Path, install: list[str] | None = None) -> Path:
    """Create ``env_dir`` for ``cell`` and return its interpreter.

    The pair is installed with every other package resolved as of the cell's cutoff (the pair
    itself exempt); ``install`` replaces the pair with other requirements (candidate builds).
    """
    exe = _interpreter(cell)
    shutil.rmtree(env_dir, ignore_errors=True)
    env = uv_env()
    rc, out = _run([_uv(), "venv", "-q", "--no-project", "-p", str(exe), str(env_dir)], 120, env)
    if rc:
        raise CellError("install-error", "uv venv failed: " + tail(out))
    python = env_dir / "bin" / "python"
    cmd = [_uv(), "pip", "install", "-q", "--python", str(python)]
    try:
        rc, out = _run(cmd + install_args(cell, install), INSTALL_TIMEOUT, env)
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
    version = _interpreter_version(str(exe))
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


@cache
def _interpreter_version(exe: str) -> str:
    """``sys.version`` of an interpreter, asked once per process (every cell on it shares it)."""
    return subprocess.run([exe, "-c", "import sys; print(sys.version)"],
                          capture_output=True, text=True, timeout=60).stdout.strip()


def link_suite_tools(python: Path, tools: Path) -> None:
    """Append ``tools`` to the cell's import path with a .pth file."""
    env_dir = python.parent.parent
    # A CPython venv on POSIX has exactly one lib/pythonX.Y/site-packages: found without
    # starting the cell's interpreter; anything else is asked as before.
    found = list(env_dir.glob("lib/python3*/site-packages"))
    if len(found) == 1:
        site = str(found[0])
    else:
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


#: The cell's one interpreter: it records the freeze of the cell's own site-packages (what
#: ``uv pip freeze`` reports: the suite tools, linked in by a .pth file, are not in it), then
#: runs pytest exactly as ``python -m pytest`` would.  Python 3.8 compatible, stdlib only.
_LAUNCH = (
    "import sys\n"
    "out = sys.argv.pop(1)\n"
    "def _freeze():\n"
    "    import json, re, sysconfig\n"
    "    from importlib import metadata\n"
    "    paths = sysconfig.get_paths()\n"
    "    found = {}\n"
    "    for dist in metadata.distributions(path=sorted({paths['purelib'], paths['platlib']})):\n"
    "        name = dist.metadata['Name']\n"
    "        if not name or dist.read_text('direct_url.json'):\n"
    "            return None  # a direct or editable install: uv's own freeze reports those\n"
    "        found[re.sub(r'[-_.]+', '-', name).lower()] = dist.version\n"
    "    with open(out, 'w') as fh:\n"
    "        json.dump(found, fh)\n"
    "try:\n"
    "    _freeze()\n"
    "except Exception:\n"
    "    pass  # the host falls back to uv's freeze\n"
    "del _freeze\n"
    "import runpy\n"
    "runpy.run_module('pytest', run_name='__main__', alter_sys=True)\n"
)


def pycache_dir() -> Path:
    """Where a cell's interpreter keeps its bytecode (``PYTHONPYCACHEPREFIX``): the suite's
    tools and the suite itself compile once per interpreter version, not once per cell; what
    a cell's environment compiled is removed with it (:func:`drop_pycache`)."""
    return WORK_DIR / "pycache"


def seed_pycache(python: Path) -> None:
    """Give the prefix the interpreter's own standard-library bytecode (hard links, once per
    interpreter), so that moving bytecode under the prefix never means compiling the standard
    library again inside a cell's timed suite run."""
    try:
        cfg = (python.parent.parent / "pyvenv.cfg").read_text(encoding="utf-8")
        home = next(line.split("=", 1)[1].strip() for line in cfg.splitlines()
                    if line.split("=", 1)[0].strip() == "home")
    except (OSError, StopIteration):
        return
    for stdlib in Path(home).parent.glob("lib/python3*"):
        done = pycache_dir() / ".seeded" / hashlib.sha256(str(stdlib).encode()).hexdigest()[:16]
        if done.exists() or not (stdlib / "os.py").exists():
            continue
        for cached in stdlib.rglob("__pycache__/*.pyc"):
            if ".opt-" in cached.name or "site-packages" in cached.parts:
                continue
            target = pycache_dir() / cached.parent.parent.relative_to("/") / cached.name
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cached, target)
            except OSError:
                try:
                    shutil.copy2(cached, target)
                except OSError:
                    pass  # then this one module compiles once, as without the seed
        done.parent.mkdir(parents=True, exist_ok=True)
        done.touch()


def drop_pycache(env_dir: Path) -> None:
    """Remove the bytecode a cell's own environment left under the shared prefix."""
    shutil.rmtree(pycache_dir() / env_dir.resolve().relative_to("/"), ignore_errors=True)


#: pytest's options beyond the suite's own pytest.ini.  ``--assert=plain``: the suite's tests
#: raise their own AssertionErrors with their own messages and its only bare asserts are
#: three module-level checks of the vocabulary, so rewriting buys nothing, while its import
#: hook inspects every module the cell imports (about 0.3 s of a 1.7 s suite run, measured).
SUITE_OPTIONS = ("-q", "--assert=plain")


def suite_command(python: Path, out_file: Path, freeze_file: Path) -> list[str]:
    return [str(python), "-c", _LAUNCH, str(freeze_file), *SUITE_OPTIONS, "-c",
            str(SUITE_DIR / "pytest.ini"), "--rootdir", str(SUITE_DIR), str(SUITE_DIR),
            "--bgmatrix-out", str(out_file)]


def run_suite(
    python: Path, cell: Mapping[str, Any], out_file: Path
) -> tuple[int, list[dict], dict]:
    """Run tests/spec in the cell; return pytest's exit code, the records and the session.

    The session holds ``packages``, the freeze the suite's own interpreter saw, when it could
    record it."""
    out_file.unlink(missing_ok=True)
    freeze_file = out_file.with_name("freeze.json")
    freeze_file.unlink(missing_ok=True)
    env = child_env(BGMATRIX_KIND=cell["kind"])
    # Bytecode goes under one shared prefix instead of nowhere: nothing is written beside the
    # sources (the suite's folder stays clean) and nothing compiles twice.
    del env["PYTHONDONTWRITEBYTECODE"]
    env["PYTHONPYCACHEPREFIX"] = str(pycache_dir())
    seed_pycache(python)
    if cell["kind"] == "starlette":
        env["BGMATRIX_ONLY_CLAUSES"] = ",".join(spec.starlette_level())
    cmd = suite_command(python, out_file, freeze_file)
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
    try:
        session["packages"] = json.loads(freeze_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass  # not recorded (the interpreter broke first): the host asks uv
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

    return {"wire": wire.wire_hash(), "servers": wire.wire_hash()}


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

    A cell's own runs (not a candidate's build, not wire mode) keep their environment in the
    store (:mod:`bgmatrix.run.envstore`) for the next run of the same cell.
    """
    if wire_mode is None:
        wire_mode = os.environ.get("BGMATRIX_WIRE") == "1"
    use_store = install is None and not wire_mode and envstore.enabled()
    result = None
    while result is None:
        result = _run_once(cell, install, wire_mode, use_store)
        use_store = False  # (None: a stored environment no longer matched its freeze)
    results.validate(result, cell["id"])
    return result


def store_dir() -> Path:
    return WORK_DIR / "envs" / "store"


def _run_once(cell: Mapping[str, Any], install: list[str] | None, wire_mode: bool,
              use_store: bool) -> results.Result | None:
    observed = others = None
    provenance = base_provenance()
    # A private folder per run: a benchmark or a test may run the same cell as a sweep.
    (WORK_DIR / "envs").mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=f"{cell['id']}.", dir=WORK_DIR / "envs"))
    env_dir = private / "env"
    with ExitStack() as stack:
        try:
            entry = None
            if use_store:
                entry = stack.enter_context(envstore.checkout(
                    store_dir(), envstore.key(env_inputs(cell)), drop_pycache))
            if entry is not None:
                env_dir = entry.path
            if entry is None or entry.fresh:
                python = build_env(cell, env_dir, install)
            else:
                python = env_dir / "bin" / "python"
            rc, records, session = run_suite(python, cell, private / "records.jsonl")
            seen = session.pop("packages", None)
            packages = seen if install is None and isinstance(seen, dict) else freeze(python)
            if entry is not None and not entry.fresh and seen != entry.freeze():
                envstore.discard(entry, drop_pycache)  # changed since it was built: run the
                return None  # cell again in a fresh environment of its own
            if wire_mode:
                from bgmatrix.run import wire  # imported here: only wire mode needs httpx

                observed = wire.observe(python, dict(cell))
                others = wire.observe_servers(python, dict(cell))
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
            if observed is not None and others is not None:
                result["wire"] = observed
                result["servers"] = others
            if entry is not None and entry.fresh and state == "ok" and seen == packages:
                entry.keep(packages)  # a clean run: the next run of this cell starts here
        except CellError as exc:
            result = result_for(cell, exc.state, exc.message, provenance)
        finally:
            shutil.rmtree(private, ignore_errors=True)
            drop_pycache(private / "env")
    if result["message"]:  # a traceback names the run's private folder: the same failure
        for folder in {env_dir, private}:  # twice
            result["message"] = result["message"].replace(str(folder), ENV_PLACEHOLDER)
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
