"""``bgmatrix fidelity``: is a cell's environment the one its release was tested with?

A cell is evidence only if the release behaves in it as it did in its own CI. So, for one cell
per minor line (Starlette 0.3 … 1.10, FastAPI 0.10 … 0.165), the release's *own* tests that
touch background tasks and middleware, taken from its source distribution, are run inside the
cell's environment, and their pass counts are recorded in ``matrix/fidelity.json``.

Which cell of a line (:func:`choose`): the line's newest release, because its patches carry the
line's last test fixes, so its tests are the ones that line's code was last checked against.
Of that release's cells, a FastAPI one must be inside the release's declared Starlette range,
and the one with the highest Starlette is taken: the release's CI installed the newest Starlette
its range allowed on the day it shipped. The plan's ``highest`` cell holds that Starlette only
where no later one fell inside the range; otherwise (101 of the plan's 200 FastAPI releases)
it holds the later one, and no planned cell holds the CI's own, so that line measures the
release's tests against a Starlette newer than the release. Then the lowest planned Python
(the plan's first interpreter for that release).

Which tests (:func:`select_tests`), one rule for both projects: every ``tests/**/test_*.py``
whose path contains ``background`` or ``middleware`` (any case), and every one whose text names
``BackgroundTask``, ``BaseHTTPMiddleware``, ``add_middleware`` or ``.middleware(``. Only the
sdist's ``tests/`` and ``docs_src/`` and its root configuration files are extracted, never its
copy of the package: the tests import the cell's installed release, nothing else.

The environment (:func:`measure`): the cell's own, built by :func:`bgmatrix.run.runner.build_env`
exactly as a sweep builds it (and compared with the packages its committed result recorded).
What the selected files import that the cell lacks (:func:`test_imports`: ``import`` statements
of the files, their conftests and the local modules they import, minus the standard library and
imports guarded by ``except ImportError``), the trio backend where a file or the configuration
names it, and pytest itself are installed as of the cell's cutoff into a folder of their own
(:func:`bgmatrix.run.env.install_beside`: the cell's packages pinned, its folder untouched),
put before the cell's site-packages on ``PYTHONPATH``. pytest then runs with the sdist's own
configuration, in the cell's interpreter, and a small plugin writes one line per test phase.

Every failing test is explained (:data:`EXPLANATIONS`, written after looking at each one); a
failure without an explanation makes the command exit 1. Releases whose sdist holds no tests,
or that have no sdist, are recorded states with their reason, not errors.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from bgmatrix import paths, results, schemas
from bgmatrix.errors import BgmatrixError, FidelityError, UsageError
from bgmatrix.files import read_checked, write_bytes_atomic, write_text_if_changed
from bgmatrix.plan import store
from bgmatrix.run import env
from bgmatrix.spec import ROOT

FIDELITY_PATH = ROOT / "matrix" / "fidelity.json"
CACHE_DIR = paths.WORK_DIR / "fidelity"  # downloaded sdists (git-ignored work folder)
FORMAT = 1
PROJECTS = ("starlette", "fastapi")
STATES = ("ok", "failures", "no-sdist", "no-tests", "install-error", "no-interpreter", "error")
INSTALL_TIMEOUT = 600  # s: period-correct test dependencies from a cold cache
TEST_TIMEOUT = 600  # s for one line's selected tests
ROUNDS = 3  # test runs at most: the first, and two after failures named what was missing

SELECTION = ("tests/**/test_*.py whose path contains 'background' or 'middleware' (any case), "
             "or whose text names BackgroundTask, BaseHTTPMiddleware, add_middleware or "
             ".middleware(")
_PATH_WORDS = re.compile(r"background|middleware", re.IGNORECASE)
_TEXT_WORDS = re.compile(r"BackgroundTask|BaseHTTPMiddleware|add_middleware|\.middleware\(")
#: Files of the sdist's root that configure pytest (extracted beside tests/ and docs_src/).
CONFIG_FILES = ("pyproject.toml", "setup.cfg", "pytest.ini", "tox.ini", "conftest.py")
EXTRACTED = ("tests", "docs_src")
#: FastAPI before docs_src/ kept its tutorial code in docs/src (see :func:`tutorial_dirs`).
OLD_DOCS_SRC = ("docs", "src")

#: Import name -> distribution, where they differ (any other name is installed as itself).
DISTRIBUTIONS = {
    "yaml": "pyyaml", "multipart": "python-multipart", "jose": "python-jose", "jwt": "pyjwt",
    "PIL": "pillow", "dirty_equals": "dirty-equals", "email_validator": "email-validator",
    "inline_snapshot": "inline-snapshot", "pydantic_settings": "pydantic-settings",
    "typing_extensions": "typing-extensions", "attr": "attrs", "dateutil": "python-dateutil",
    "opentelemetry": "opentelemetry-sdk", "sqlmodel": "sqlmodel", "sse_starlette": "sse-starlette",
    "strawberry": "strawberry-graphql", "_pytest": "pytest", "bson": "pymongo",
    "graphql": "graphql-core",
}
#: Import names never installed: the sdist's own folders and the projects (in the cell).
LOCAL = ("tests", "docs_src", "conftest", "fastapi", "starlette")
SDIST_MODULES = LOCAL[:3]


# ---------------------------------------------------------------------------- choosing cells


def line_of(project: str, version: str) -> str:
    """``starlette-0.13`` for Starlette 0.13.8: a minor line's id."""
    return f"{project}-{'.'.join(version.split('.')[:2])}"


def _release(cell: Mapping[str, Any], project: str) -> Optional[str]:
    if project == "fastapi":
        return cell.get("fastapi")
    return cell.get("starlette") if cell["kind"] == "starlette" else None


def choose(cells: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One cell per minor line of each project, by the rule in the module's docstring."""
    best: dict[str, tuple[tuple, dict[str, Any]]] = {}
    for cell in cells:
        for project in PROJECTS:
            version = _release(cell, project)
            if not version or cell["kind"] != project:
                continue
            if project == "fastapi" and cell.get("in_declared_range") is False:
                continue
            rank = (store.version_key(version),
                    store.version_key(cell.get("starlette") or "0") if project == "fastapi"
                    else (), tuple(-int(p) for p in cell["python"].split(".")))
            line = line_of(project, version)
            if line not in best or rank > best[line][0]:
                best[line] = (rank, dict(cell))
    return {line: best[line][1] for line in sorted(best, key=line_order)}


def line_order(line: str) -> tuple:
    project, _, version = line.partition("-")
    return (PROJECTS.index(project) if project in PROJECTS else 9, store.version_key(version))


def pick(chosen: Mapping[str, Mapping[str, Any]], targets: Sequence[str]) -> list[str]:
    """Line ids named by ``starlette==0.13``, ``fastapi==0.100.1`` (its line) or
    ``starlette-0.13``; an unknown one is a one-line :class:`UsageError`."""
    wanted: list[str] = []
    for target in targets:
        project, sep, version = target.partition("==")
        line = line_of(project, version) if sep else target
        if line not in chosen:
            project = line.partition("-")[0]
            known = [k.partition("-")[2] for k in chosen if k.startswith(project + "-")]
            span = f"{known[0]} … {known[-1]}" if known else "none"
            raise UsageError(f"{target!r} is not a planned line (planned {project} lines: "
                                f"{span}; name one as {project}==X.Y)")
        if line not in wanted:
            wanted.append(line)
    return wanted


# ---------------------------------------------------------------------------- the sdist


def sdist_path(project: str, version: str, folder: Path | None = None) -> Optional[Path]:
    """The release's sdist, downloaded once into the work folder; None when it has none."""
    folder = folder or CACHE_DIR / "sdists"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{project}-{version}.none"
    found = sorted(folder.glob(f"{project}-{version}.tar.gz")) + sorted(
        folder.glob(f"{project}-{version}.zip"))
    if found:
        return found[0]
    if marker.exists():
        return None
    from bgmatrix.plan import index  # the one module that talks to the package index

    got = index.sdist(index.make_client(), project, version)
    if got is None:
        marker.touch()
        return None
    name, data = got
    suffix = ".zip" if name.endswith(".zip") else ".tar.gz"
    path = folder / f"{project}-{version}{suffix}"
    write_bytes_atomic(path, data)
    return path


def _kept(parts: Sequence[str]) -> bool:
    """Whether a file (its path's parts below the release's top folder) is extracted: tests/,
    the tutorial code and the root configuration, never the package."""
    return bool(parts) and (parts[0] in EXTRACTED and len(parts) > 1
                            or tuple(parts[:2]) == OLD_DOCS_SRC and len(parts) > 2
                            or (len(parts) == 1 and parts[0] in CONFIG_FILES))


def _members(archive: Path) -> Iterable[tuple[PurePosixPath, bytes]]:
    """``(path below the sdist's top folder, bytes)`` of every regular file worth extracting."""
    def wanted(name: str) -> Optional[PurePosixPath]:
        parts = PurePosixPath(name).parts[1:]
        if not parts or ".." in parts or name.startswith("/"):
            return None
        return PurePosixPath(*parts) if _kept(parts) else None

    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = wanted(info.filename)
                if rel is not None and not info.is_dir():
                    yield rel, zf.read(info)
        return
    with tarfile.open(archive, "r:*") as tf:
        for member in tf.getmembers():
            rel = wanted(member.name)
            if rel is not None and member.isfile():
                handle = tf.extractfile(member)
                if handle is not None:
                    yield rel, handle.read()


def extract(archive: Path, dest: Path) -> None:
    """The sdist's tests/, docs_src/ and root configuration into ``dest``; never its package
    (which would shadow the cell's installed release on ``sys.path``)."""
    for rel, data in _members(archive):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def git_tests(repo: Path, project: str, version: str, folder: Path) -> tuple[Path, dict]:
    """The tagged release's tests/, docs_src/ and root configuration from a clone of the
    project's repository, as an archive :func:`extract` reads, and ``{"git_tag", "commit"}``.
    For the releases whose sdist ships no tests (Starlette before 0.28): the tag is the source
    the sdist was built from. A missing tag is a one-line :class:`FidelityError`."""
    def git(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *argv], capture_output=True,
                              check=False)

    for tag in (version, f"v{version}"):
        found = git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
        if found.returncode == 0:
            break
    else:
        raise FidelityError(f"{repo} has no tag {version} (nor v{version})")
    commit = found.stdout.decode().strip()
    files = git("ls-tree", "-r", "-z", "--name-only", commit).stdout.decode().split("\0")
    wanted = sorted(n for n in files if _kept(PurePosixPath(n).parts))
    archive = folder / f"{project}-{version}-{commit[:12]}.tar"
    if not archive.exists():
        folder.mkdir(parents=True, exist_ok=True)
        made = git("archive", "--format=tar", f"--prefix={project}-{version}/", commit,
                   "--", *wanted)
        if made.returncode:
            raise FidelityError(f"git archive {tag} failed: "
                                + one_line(made.stderr.decode(errors="replace")))
        write_bytes_atomic(archive, made.stdout)
    return archive, {"git_tag": tag, "commit": commit}


def select_tests(root: Path) -> list[str]:
    """The test files :data:`SELECTION` names, as sorted paths relative to ``root``."""
    chosen = []
    for path in sorted((root / "tests").rglob("test_*.py")) if (root / "tests").is_dir() else []:
        rel = path.relative_to(root).as_posix()
        if _PATH_WORDS.search(rel) or _TEXT_WORDS.search(path.read_text("utf-8", "replace")):
            chosen.append(rel)
    return chosen


# ---------------------------------------------------------------------------- test dependencies


def _optional(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside a ``try`` whose handler catches ImportError."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {n.id for n in names if isinstance(n, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            for stmt in node.body:
                lines |= {n.lineno for n in ast.walk(stmt) if hasattr(n, "lineno")}
    return lines


def tutorial_dirs(root: Path) -> list[Path]:
    """The sdist's tutorial-code folders its tests import from by bare name (FastAPI's
    scripts/test.sh exported ``PYTHONPATH=./docs/src``, later ``./docs_src``): put at the
    end of ``sys.path`` by the plugin, so no tutorial folder shadows an installed package."""
    return [d for d in (root.joinpath(*OLD_DOCS_SRC), root / "docs_src") if d.is_dir()]


def _local(root: Path, dotted: str) -> Optional[Path]:
    """The sdist's own file for module ``dotted`` (a namespace folder: its path), if any."""
    for folder in (root, *tutorial_dirs(root)):
        base = folder.joinpath(*dotted.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        if base.is_dir():
            return base
    return None


def test_imports(root: Path, files: Sequence[str]) -> set[str]:
    """The modules the files import (dotted), following the sdist's own modules (its
    conftests included); standard library, optional imports and the sdist's folders left
    out. The framework's own modules stay: importing them finds what they need."""
    todo = [root / f for f in files]
    for f in files:  # every conftest.py on the way from the root to each file
        folder = root
        for part in PurePosixPath(f).parent.parts:
            folder = folder / part
            if (folder / "conftest.py").is_file():
                todo.append(folder / "conftest.py")
    if (root / "conftest.py").is_file():
        todo.append(root / "conftest.py")
    seen: set[Path] = set()
    names: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_text("utf-8", "replace"))
        except SyntaxError:
            continue  # a file for a newer Python than the host's parser: pytest says why
        optional = _optional(tree)
        package = ".".join(path.relative_to(root).parent.parts)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                dotted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: resolved against the file's own package
                    parts = package.split(".") if package else []
                    base = parts[: len(parts) - node.level + 1]
                    module = ".".join(p for p in (*base, module) if p)
                dotted = [module] + [f"{module}.{a.name}" if module else a.name
                                     for a in node.names]
            else:
                continue
            for name in dotted:
                found = _local(root, name)
                if found is not None and found.is_file():
                    todo.append(found)
            # ``from m import a``: m is the module (a may be a name in it); ``import a, b``: both
            for name in dotted[:1] if isinstance(node, ast.ImportFrom) else dotted:
                top = name.split(".")[0]
                if (node.lineno not in optional and top and top not in sys.stdlib_module_names
                        and top not in SDIST_MODULES and _local(root, name) is None):
                    names.add(name)
    return names


#: Imports each name in the cell (its own packages only) and prints the distributions that
#: stopped it: a ModuleNotFoundError's top-level name (unless that top-level package exists:
#: then a submodule is missing, not a distribution), or the name an error's "pip install X"
#: advice gives (a framework's test client says so when its HTTP library is absent).
_FIND = (
    "import importlib, importlib.util, json, re, sys, warnings\n"
    "warnings.simplefilter('ignore')\n"
    "need = set()\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except ModuleNotFoundError as exc:\n"
    "        top = (exc.name or name).split('.')[0]\n"
    "        if importlib.util.find_spec(top) is None:\n"
    "            need.add(top)\n"
    "    except BaseException as exc:\n"
    "        found = re.search(r'pip install ([A-Za-z0-9_.-]+)', str(exc))\n"
    "        if found:\n"
    "            need.add(found.group(1))\n"
    "print(json.dumps(sorted(need)))\n"
)


def missing(python: Path, names: Iterable[str]) -> list[str]:
    """What the cell lacks to import ``names`` (dotted modules), as import or distribution
    names (see :data:`_FIND`)."""
    wanted = sorted(names)
    if not wanted:
        return []
    from bgmatrix.run import runner

    proc = subprocess.run([str(python), "-c", _FIND, *wanted], capture_output=True, text=True,
                          timeout=300, env=runner.child_env())
    try:
        return sorted(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        raise FidelityError("checking the tests' imports in the cell failed: "
                            + one_line(env.tail(proc.stderr or proc.stdout))) from None


#: The first pytest that runs on each Python (older ones crash rewriting its assertions). A
#: release older than its cell's Python gets the first pytest of that Python, not its own.
PYTEST_FLOOR = {"3.8": "5.4", "3.9": "6.2", "3.10": "6.2.5", "3.11": "7.2", "3.12": "7.4",
                "3.13": "8.2"}


#: pytest and what it has needed, exempt from an old cutoff together (see measure).
PYTEST_DEPENDENCIES = ("pytest", "pluggy", "py", "packaging", "attrs", "more-itertools",
                       "wcwidth", "importlib-metadata", "zipp", "iniconfig", "atomicwrites",
                       "tomli", "exceptiongroup", "six", "pyparsing", "colorama")


def pytest_requirement(python: str) -> str:
    floor = PYTEST_FLOOR.get(python)
    return f"pytest>={floor}" if floor else "pytest"


def requirements_for(absent: Iterable[str], packages: Mapping[str, str],
                     python: str = "") -> list[str]:
    """pytest (at least :data:`PYTEST_FLOOR`), then the distributions of the absent names,
    sorted, deduplicated; and where the cell has anyio, its trio extra: anyio's pytest plugin
    runs a test on every backend the release's conftest names, trio among them, and the
    extra's bounds fit the cell's anyio."""
    wanted = {DISTRIBUTIONS.get(n, n).lower() for n in absent if n not in LOCAL} - {"pytest"}
    if "anyio" in packages:
        wanted.add("anyio[trio]")
    return [pytest_requirement(python), *sorted(wanted)]


#: What a failure's reason says is missing: a module, a distribution to ``pip install`` or
#: that is "required to be installed", or a marker a pytest plugin registers.
_NEEDS = (
    re.compile(r"No module named '([A-Za-z0-9_]+)"),
    re.compile(r"pip install ([A-Za-z0-9_.-]+)"),
    re.compile(r'requires "([A-Za-z0-9_.-]+)" to be installed'),
    re.compile(r"\b([A-Za-z0-9_]+) must be installed"),  # Starlette's optional imports
)
_MARKER = re.compile(r"'([A-Za-z0-9_]+)' not found in `markers`|Unknown config option: "
                     r"([A-Za-z0-9_]+)|fixture '([A-Za-z0-9_]+)' not found|"
                     r"unrecognized arguments: --([a-z]+)")
#: marker, configuration option, fixture or command-line option (--cov in a release's addopts)
#: -> the pytest plugin that registers it
MARKER_PLUGINS = {"xdist_group": "pytest-xdist", "asyncio": "pytest-asyncio",
                  "asyncio_mode": "pytest-asyncio", "timeout": "pytest-timeout",
                  "benchmark": "pytest-benchmark", "event_loop": "pytest-asyncio",
                  "cov": "pytest-cov"}


def needs_from(reasons: Iterable[str]) -> set[str]:
    """Distributions the failures' reasons say are missing (see :data:`_NEEDS`)."""
    found = set()
    for reason in reasons:
        for pattern in _NEEDS:
            for name in pattern.findall(reason):
                found.add(DISTRIBUTIONS.get(name, name).lower())
        for marker in map("".join, _MARKER.findall(reason)):  # one group matches
            if marker in MARKER_PLUGINS:
                found.add(MARKER_PLUGINS[marker])
    return found - set(LOCAL)


# ---------------------------------------------------------------------------- running pytest

#: A pytest plugin (Python 3.6+, pytest 3+): puts the tutorial folders at the end of sys.path,
#: then writes one JSON line per test phase and per failed collection, then the session's
#: exit status and pytest's version.
PLUGIN = '''\
import json, os, sys
_OUT = os.environ["BGMATRIX_FIDELITY_OUT"]
sys.path.extend(p for p in os.environ.get("BGMATRIX_FIDELITY_PATHS", "").split(":") if p)
def _write(record):
    with open(_OUT, "a") as fh:
        fh.write(json.dumps(record) + "\\n")
def _reason(report):
    rep = report.longrepr
    if rep is None:
        return ""
    if isinstance(rep, tuple) and len(rep) == 3:
        return str(rep[2])
    crash = getattr(rep, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    text = str(rep).strip().splitlines()
    marked = [line[1:].strip() for line in text if line.startswith("E ")]
    return (marked or text or [""])[-1]
def pytest_runtest_logreport(report):
    _write({"test": report.nodeid, "when": report.when, "outcome": report.outcome,
            "reason": _reason(report) if report.outcome != "passed" else ""})
def pytest_collectreport(report):
    if report.failed:
        _write({"test": report.nodeid, "when": "collect", "outcome": "failed",
                "reason": _reason(report)})
def pytest_sessionfinish(session, exitstatus):
    import pytest
    _write({"session": {"exitstatus": int(exitstatus), "pytest": pytest.__version__}})
'''

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def one_line(text: str, *folders: Path) -> str:
    """A reason as one short line, with the run's folders and memory addresses taken out."""
    for folder in folders:
        text = text.replace(str(folder), "<run>")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = _ADDRESS.sub("", first)
    return first if len(first) <= 240 else first[:239] + "…"


def outcomes(lines: Iterable[str]) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Each test's outcome (passed, failed, skipped, error) and one-line reason from the
    plugin's records, and the session record. A failed call is ``failed``; a failed setup,
    teardown or collection is ``error``; a skip or an expected failure is ``skipped``."""
    phases: dict[str, list[dict[str, Any]]] = {}
    session: dict[str, Any] = {}
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if "session" in data:
            session = data["session"]
        else:
            phases.setdefault(data["test"], []).append(data)
    tests = {}
    for test, seen in phases.items():
        by = {p["when"]: p for p in seen}
        failed = [p for p in seen if p["outcome"] == "failed"]
        if by.get("call", {}).get("outcome") == "failed":
            outcome, reason = "failed", by["call"]["reason"]
        elif failed:
            outcome, reason = "error", failed[0]["reason"]
        elif any(p["outcome"] == "skipped" for p in seen):
            outcome = "skipped"
            reason = next(p["reason"] for p in seen if p["outcome"] == "skipped")
        else:
            outcome, reason = "passed", ""
        tests[test] = {"outcome": outcome, "reason": reason}
    return tests, session


def counts(tests: Mapping[str, Mapping[str, str]], files: Sequence[str]) -> dict[str, dict]:
    """Per selected file: how many tests passed, failed, were skipped or errored."""
    table = {f: {"passed": 0, "failed": 0, "skipped": 0, "errors": 0} for f in files}
    key = {"passed": "passed", "failed": "failed", "skipped": "skipped", "error": "errors"}
    for test, seen in tests.items():
        name = test.split("::")[0]
        table.setdefault(name, {"passed": 0, "failed": 0, "skipped": 0, "errors": 0})
        table[name][key[seen["outcome"]]] += 1
    return dict(sorted(table.items()))


def run_tests(python: Path, root: Path, files: Sequence[str], target: Path) -> tuple[int, str,
                                                                                     list[str]]:
    """pytest on ``files`` from ``root`` in the cell's interpreter, ``target`` first on the
    path; returns the exit code, the output's tail and the plugin's lines."""
    from bgmatrix.run import runner

    plugin_dir = root.parent / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "bgmatrix_fidelity_plugin.py").write_text(PLUGIN)
    out = root.parent / "outcomes.jsonl"
    out.unlink(missing_ok=True)  # one run's records only
    child = runner.child_env(PYTHONPATH=f"{target}:{plugin_dir}", BGMATRIX_FIDELITY_OUT=str(out),
                             BGMATRIX_FIDELITY_PATHS=":".join(map(str, tutorial_dirs(root))))
    cmd = [str(python), "-m", "pytest", "-p", "bgmatrix_fidelity_plugin", "-p",
           "no:cacheprovider", "-q", "-o", "console_output_style=classic", *files]
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, errors="replace",
                              timeout=TEST_TIMEOUT, env=child)
        rc, output = proc.returncode, (proc.stdout or "") + (proc.stderr or "")
    except subprocess.TimeoutExpired:
        rc, output = -1, f"the tests did not finish within {TEST_TIMEOUT}s"
    if rc in env.SIGINT_CODES:
        raise env.Interrupted("pytest")
    lines = out.read_text("utf-8", "replace").splitlines() if out.exists() else []
    return rc, output, lines


# ---------------------------------------------------------------------------- explanations


@dataclass(frozen=True)
class Explanation:
    """What looking at a failure found. It applies to a failing test of a line when ``lines``
    matches the line id, ``test`` the test's node id and ``reason`` its one-line reason (each
    a regular expression, searched): a failure that changes its reason is unexplained again."""

    lines: str
    test: str
    reason: str
    text: str
    environment_problem: bool = False


#: Filled in after investigating each failure of a real run (README: Environment fidelity).
EXPLANATIONS: tuple[Explanation, ...] = (
    Explanation(
        r"^starlette-", r"^tests/test_staticfiles\.py::"
        r"test_staticfiles_with_invalid_dir_permissions_returns_401\[", r"^assert 200 == 401$",
        "This machine runs the tests as root (uid 0), and root reads a folder whatever its "
        "mode: the test's chmod does not take the permission away, so StaticFiles serves the "
        "file (200) instead of answering 401. Starlette's CI runs as an unprivileged user. A "
        "fact of the host, not of the cell's packages: for any other user the folder is "
        "unreadable, as the test expects."),
    Explanation(
        r"^fastapi-", r"^tests/test_tutorial/test_sql_databases/"
        r"test_sql_databases_middleware\.py::", r"^sqlalchemy\.exc\.MovedIn20Warning: ",
        "The tutorial's declarative_base() makes SQLAlchemy 1.4.46 and later emit "
        "MovedIn20Warning, and the release's pytest configuration turns every warning into "
        "an error (filterwarnings = error). The release's own test requirements pin "
        "sqlalchemy >=1.3.18,<1.4.43 (pyproject.toml's test extra, later "
        "requirements-tests.txt), so its CI never met the warning; `bgmatrix fidelity` "
        "installs the newest SQLAlchemy of the cutoff that the test imports (1.4.46 for "
        "0.89, 2.0.x later). The tests' own dependencies differ from the release's CI; the "
        "cell's packages are not involved. Not yet verified by a run with the pin (the fix: "
        "take the release's declared test pins as constraints)."),
    Explanation(
        r"^fastapi-0\.11[1-4]$", r"^tests/", r"^pytest\.PytestUnraisableExceptionWarning: "
        r"Exception ignored in: <function MemoryObjectReceiveStream\.__del__>",
        "A real difference between the cell and the release's CI. The cell holds anyio 4.4 "
        "or 4.5, what installing the release at its cutoff gives (its declared range allows "
        "anyio 4), while the release's own test requirements pin anyio[trio] >=3.2.1,<4.0.0 "
        "(requirements-tests.txt). anyio 4.4 added a ResourceWarning when a memory object "
        "stream is garbage-collected unclosed; a stream the framework leaves unclosed here "
        "raises it inside __del__, and the release's filterwarnings = error turns that into "
        "a failure. Not fixed: the cell is meant to hold what a user installs at the cutoff "
        "(its results are kept); a re-run with anyio<4 in the tests' environment was not "
        "done.", environment_problem=True),
    Explanation(
        r"^fastapi-0\.1[3-6][0-9]$", r"^tests/test_frontend\.py::"
        r"test_frontend_dependency_restores_existing_dependency_stacks\[",
        r"^Failed: Timeout \(>20\.0s\) from pytest-timeout\.$",
        "The cell pairs the release with Starlette 1.10.0 (2026-10-24), the highest its range "
        "allowed when the plan was made, which is newer than the release itself (0.139.2 "
        "shipped 2026-07-16): its CI never saw that Starlette. The test calls the frontend "
        "route's handler directly with a receive() that always answers http.request, and it "
        "does not return within the configured 20 s. Not verified against a Starlette of the "
        "release's date; the cell choice is the cause to fix (see README: the FastAPI cell "
        "whose cutoff is the release's own).", environment_problem=True),
    Explanation(
        r"^starlette-0\.32$", r"\[trio[\]-]", r"TrioDeprecationWarning",
        "anyio's trio extra let the tests' environment take trio 0.23.1, the newest at the "
        "cutoff, which deprecates the cancellable= argument the cell's anyio still passes to "
        "trio.to_thread.run_sync; the release's filterwarnings = error turns the warning into "
        "a failure of every trio-parametrised test that runs a thread. Starlette's own "
        "requirements.txt pins trio==0.22.2 (and anyio==4.0.0) for its CI. A gap in the "
        "tests' dependencies; the cell's packages are not involved. Verified: the same "
        "environment with trio==0.22.2 added leaves only the two root-only staticfiles "
        "failures of the 324 selected tests (the fix, not built: the release's declared test "
        "pins as constraints)."),
    Explanation(
        r"^starlette-0\.([7-9]|1[0-2])$", r"^tests/test_responses\.py::test_ujson_response$",
        r"^AttributeError: 'NoneType' object has no attribute 'dumps'$",
        "ujson is not in the tests' environment: Starlette imports it optionally (ujson = None "
        "when absent) and no test file imports it, so nothing asks for it; the release's own "
        "requirements.txt lists it. Measured on 0.12 (tests from the 0.12.13 tag): with ujson "
        "added to the tests' requirements (1.35, the newest at the cutoff) the test passes. A "
        "gap in the tests' dependencies; the cell's packages are not involved."),
    Explanation(
        r"^starlette-0\.1[23]$", r"^tests/middleware/test_errors\.py::test_debug_html$",
        r"^KeyError: 'content-type'$",
        "The debug page is never rendered: ServerErrorMiddleware.generate_html reads "
        "traceback.TracebackException(...).exc_traceback, an attribute CPython 3.7.16 has and "
        "the cell's Python 3.8.18 does not, so the error handler itself raises "
        "AttributeError and the client gets a response without a content-type. Measured: "
        "the release's ServerErrorMiddleware(debug=True) in the cell, driven by its "
        "TestClient, raises AttributeError: 'TracebackException' object has no attribute "
        "'exc_traceback'. A difference between the cell's interpreter (the plan's Python "
        "3.8, here 3.8.18) and the release's own CI; the background and "
        "middleware clauses do not use the debug page.", environment_problem=True),
    Explanation(
        r"^starlette-0\.16$", r"^tests/middleware/test_base\.py::test_custom_middleware\[trio\]$",
        r"^anyio\._backends\._trio\.ExceptionGroup: 2 exceptions were raised",
        "A race in the release itself: when an endpoint under BaseHTTPMiddleware raises, the "
        "endpoint's exception and call_next's RuntimeError('No response returned.') can both "
        "reach anyio's task group; on trio the group is a trio.MultiError, a BaseException, "
        "which the test's pytest.raises(Exception) does not catch. Whether both arrive is "
        "the scheduler's choice: the same rebuilt environment, measured 10 more times, "
        "failed 5 times and passed 5. Starlette 0.17.0 fixed it (#1262, \"Prevent "
        "anyio.ExceptionGroup in error views under a BaseHTTPMiddleware\"). Not the cell: "
        "the framework's behaviour under trio."),
    Explanation(
        r"^starlette-0\.32$", r"^tests/(middleware/test_errors\.py::test_(background_task|"
        r"handler)|test_background\.py::test_multi_tasks_failure_avoids_next_execution)"
        r"\[trio\]$", r"^(assert False|assert 0 == 1|json\.decoder\.JSONDecodeError: "
        r"Expecting value: line 1 column 1 \(char 0\))$",
        "The same trio 0.23.1 TrioDeprecationWarning (cancellable= passed by the cell's anyio "
        "4.0.0 to trio.to_thread.run_sync, an error under filterwarnings = error), seen "
        "through a different symptom: each test's sync callable (background task or error "
        "handler) goes through run_in_threadpool, which raises the warning before the "
        "callable runs, so the handler is never reached (assert False), the 500 response "
        "has an empty body (JSONDecodeError) and pytest.raises catches the warning before "
        "the first task counts (assert 0 == 1). Measured: the cell's environment plus the "
        "tests' dependencies rebuilt as `bgmatrix fidelity` builds them fails these three "
        "tests; the same with trio==0.22.2 (Starlette's requirements.txt pin) added passes "
        "all 20 tests of tests/middleware/test_errors.py and tests/test_background.py, and of "
        "the 324 selected tests leaves only the two root-only "
        "test_staticfiles_with_invalid_dir_permissions_returns_401 failures (82 fail with "
        "trio 0.23.1). A gap in the tests' dependencies; the cell's packages are not "
        "involved."),
    Explanation(
        r"^fastapi-0\.(14[2-9]|15[0-9]|16[0-5])$", r"^tests/test_telemetry/test_background\.py"
        r"::test_background_task_integrations\[(contrib|logfire)\]$",
        r"^AssertionError: Traceback \(most recent call last\):$",
        "The test runs in a subprocess whose traceback is the assertion's message: [contrib] "
        "fails with ModuleNotFoundError: No module named 'opentelemetry.instrumentation."
        "fastapi', [logfire] with logfire's RuntimeError that instrument_fastapi() requires "
        "the opentelemetry-instrumentation-fastapi package. The release's own `tests` "
        "dependency group (pyproject.toml) lists opentelemetry-instrumentation-fastapi"
        ">=0.65b0, but `bgmatrix fidelity` never installs it: the cell already holds the "
        "top-level opentelemetry package (opentelemetry-api, a FastAPI dependency), so the "
        "missing opentelemetry.instrumentation.fastapi reads as a missing submodule, not a "
        "distribution. Not a version problem: with opentelemetry-instrumentation-fastapi "
        "added to the tests' requirements, installed as of the cutoff beside the same "
        "logfire/opentelemetry versions (0.66b1 with logfire 5.3.0 and opentelemetry-sdk "
        "1.45.1 for 0.142.4 and 0.146.0; 0.66b2 with logfire 5.4.0 and opentelemetry-sdk "
        "1.45.2 for 0.165.0), all 17 tests of tests/test_telemetry/test_background.py pass; "
        "without it these two fail. A gap in the tests' dependencies; the cell's packages "
        "are not involved."),
)


def explain(line: str, test: str, reason: str,
            known: Sequence[Explanation] = EXPLANATIONS) -> Optional[Explanation]:
    for item in known:
        if (re.search(item.lines, line) and re.search(item.test, test)
                and re.search(item.reason, reason)):
            return item
    return None


def with_explanations(entry: dict[str, Any], line: str,
                      known: Sequence[Explanation] = EXPLANATIONS) -> dict[str, Any]:
    """``entry`` with every failure's ``explanation`` (None: not investigated) and the state
    ``failures`` where a test failed or errored."""
    for failure in entry.get("failures", []):
        found = explain(line, failure["test"], failure["reason"], known)
        failure["explanation"] = found.text if found else None
        failure["environment_problem"] = found.environment_problem if found else None
    return entry


# ---------------------------------------------------------------------------- measuring a line


def environment_check(cell: Mapping[str, Any], packages: Mapping[str, str],
                      results_dir: Path = results.RESULTS_DIR) -> dict[str, Any]:
    """Whether the rebuilt environment holds exactly the packages the cell's committed result
    recorded (``differences``: name -> [recorded, rebuilt])."""
    path = results_dir / f"{cell['id']}.json"
    try:
        recorded = (results.load(path).get("provenance") or {}).get("packages")
    except (OSError, BgmatrixError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        return {"matches_result": None, "differences": {}}
    diff = {n: [recorded.get(n), packages.get(n)]
            for n in sorted(set(recorded) | set(packages)) if recorded.get(n) != packages.get(n)}
    return {"matches_result": not diff, "differences": diff}


def blank(line: str, cell: Mapping[str, Any]) -> dict[str, Any]:
    project = line.partition("-")[0]
    return {
        "cell": {k: cell.get(k) for k in ("id", "kind", "fastapi", "starlette", "python",
                                          "cutoff")},
        "release": _release(cell, project), "state": "error", "message": None, "sdist": None,
        "selected": [], "test_dependencies": {}, "pytest": None, "environment": None,
        "files": {}, "totals": {"passed": 0, "failed": 0, "skipped": 0, "errors": 0},
        "failures": [],
    }


def measure(line: str, cell: Mapping[str, Any], work: Path,
            git: Optional[Path] = None) -> dict[str, Any]:
    """One line's entry of matrix/fidelity.json; never raises (but on Ctrl-C). ``git``: a clone
    of the project's repository, whose release tag gives the tests an sdist does not ship."""
    from bgmatrix.run import runner

    entry = blank(line, cell)
    project = line.partition("-")[0]
    try:
        archive = sdist_path(project, entry["release"])
        if archive is None:
            entry.update(state="no-sdist", message="the release has no source distribution on "
                         "the package index")
            return entry
        entry["sdist"] = archive.name
        root = work / "sdist"
        extract(archive, root)
        files = select_tests(root)
        if not (root / "tests").is_dir() and git is not None:
            tagged, entry["tests_from"] = git_tests(git, project, entry["release"],
                                                    CACHE_DIR / "git")
            extract(tagged, root)
            files = select_tests(root)
        entry["selected"] = files
        if not files:
            has = (root / "tests").is_dir()
            entry.update(state="no-tests", message=(
                "its tests/ has no test file that touches background tasks or middleware"
                if has else "the sdist ships no tests/ folder"))
            return entry
        python = runner.build_env(cell, work / "env")
        packages = env.freeze(python)
        entry["environment"] = environment_check(cell, packages)
        absent = missing(python, test_imports(root, files))
        reqs = requirements_for(absent, packages, cell["python"])
        target = work / "test-deps"
        for _round in range(ROUNDS):  # a failure that names what is missing adds it, once
            shutil.rmtree(target, ignore_errors=True)
            rc, out = env.install_beside(python, cell.get("cutoff"), reqs, target,
                                         INSTALL_TIMEOUT)
            if rc and reqs[0] != "pytest":
                # no pytest of the cutoff runs on the cell's Python (the release is older
                # than its cell's Python): the floor's own series, it and what it needs exempt
                # from the cutoff, as the suite's own tools are
                floor = [f"pytest~={PYTEST_FLOOR[cell['python']]}.0", *reqs[1:]]
                rc, out = env.install_beside(python, cell.get("cutoff"), floor, target,
                                             INSTALL_TIMEOUT, exempt=PYTEST_DEPENDENCIES)
            if rc:
                entry.update(state="install-error", message=one_line(
                    env.tail(out).splitlines()[-1] if out.strip() else "uv failed", work))
                return entry
            rc, output, lines = run_tests(python, root, files, target)
            tests, session = outcomes(lines)
            said = [t["reason"] for t in tests.values() if t["outcome"] in ("failed", "error")]
            more = needs_from(said if tests else [output]) - set(reqs)
            if not more:
                break
            reqs = [reqs[0], *sorted((set(reqs[1:]) | more) - {"pytest"})]
        from bgmatrix.run import wire  # _distributions: the --target folder's dist-info names

        entry["test_dependencies"] = {n: v for n, v in wire._distributions(target).items()
                                      if packages.get(n) != v}
        entry["pytest"] = session.get("pytest")
        entry["files"] = counts(tests, files)
        entry["totals"] = {k: sum(f[k] for f in entry["files"].values())
                           for k in ("passed", "failed", "skipped", "errors")}
        entry["failures"] = [
            {"test": test, "outcome": seen["outcome"],
             "reason": one_line(seen["reason"], work) or "no reason given"}
            for test, seen in sorted(tests.items()) if seen["outcome"] in ("failed", "error")]
        if rc == -1 or "exitstatus" not in session or not tests:
            entry.update(state="error", message=one_line(
                env.tail(output).splitlines()[-1] if output.strip() else "pytest said nothing",
                work))
        else:
            entry["state"] = "failures" if entry["failures"] else "ok"
    except env.CellError as exc:
        entry.update(state="no-interpreter" if exc.state == "no-interpreter"
                     else "install-error", message=one_line(exc.message, work))
    except env.Interrupted:
        raise
    except Exception as exc:  # a broken line is a recorded state, never a crashed command
        entry.update(state="error", message=one_line(f"{type(exc).__name__}: {exc}", work))
    return entry


# ---------------------------------------------------------------------------- the file


def load(path: Path = FIDELITY_PATH) -> Optional[dict[str, Any]]:
    """matrix/fidelity.json checked against its schema; None when there is none; a corrupt
    file is a one-line :class:`FidelityError`."""
    return read_checked(path, "fidelity", FidelityError, "fidelity record")


def dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write(data: Mapping[str, Any], path: Path = FIDELITY_PATH) -> bool:
    found = schemas.problem(data, "fidelity")
    if found is not None:  # never commit a record the schema refuses
        raise FidelityError(f"fidelity record: {found}")
    return write_text_if_changed(path, dumps(data))


def record(measured: Mapping[str, dict[str, Any]], old: Optional[Mapping[str, Any]] = None,
           known: Sequence[Explanation] = EXPLANATIONS) -> dict[str, Any]:
    """The file: ``measured`` lines over the lines of ``old`` kept as they were, every
    failure's explanation applied afresh."""
    lines = {k: json.loads(json.dumps(v)) for k, v in (old or {}).get("lines", {}).items()}
    lines.update({k: json.loads(json.dumps(v)) for k, v in measured.items()})
    for line, entry in lines.items():
        with_explanations(entry, line, known)
    return {
        "about": "The release's own tests that touch background tasks and middleware, from "
                 "its source distribution, run in one cell per minor line. Written by "
                 "`bgmatrix fidelity`.",
        "format": FORMAT,
        "selection": SELECTION,
        "lines": {k: lines[k] for k in sorted(lines, key=line_order)},
    }


def unexplained(data: Mapping[str, Any]) -> list[str]:
    return [f"{line}: {f['test']}" for line, entry in data["lines"].items()
            for f in entry["failures"] if f["explanation"] is None]


def summary(line: str, entry: Mapping[str, Any]) -> str:
    t = entry["totals"]
    head = f"{line} ({entry['cell']['id']}): {entry['state']}"
    if entry["state"] in ("ok", "failures"):
        return (f"{head}, {len(entry['files'])} files: {t['passed']} passed, {t['failed']} "
                f"failed, {t['skipped']} skipped, {t['errors']} errors")
    return f"{head} ({entry['message']})"


# ---------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lines", nargs="*", metavar="LINE",
                   help="starlette==X.Y or fastapi==0.N (a release X.Y.Z names its line); "
                        "default: every line")
    p.add_argument("--project", choices=PROJECTS, help="only this project's lines")
    p.add_argument("--list", action="store_true", help="print the chosen cells; run nothing")
    p.add_argument("--explain", action="store_true",
                   help="re-apply the explanations to the record; run nothing")
    p.add_argument("--out", default=str(FIDELITY_PATH),
                   help="where the record goes (default: matrix/fidelity.json)")
    p.add_argument("--git", action="append", default=[], metavar="PROJECT=DIR",
                   help="a clone of the project's repository: a release whose sdist ships no "
                        "tests gets them from its tag (e.g. starlette=../starlette)")


def git_clones(specs: Sequence[str]) -> dict[str, Path]:
    """``--git`` values -> {project: clone}; anything else is a one-line UsageError."""
    clones: dict[str, Path] = {}
    for spec in specs:
        project, _, folder = spec.partition("=")
        if project not in PROJECTS or not folder:
            raise UsageError(f"--git {spec!r}: expected PROJECT=DIR, PROJECT one of "
                             + ", ".join(PROJECTS))
        found = subprocess.run(["git", "-C", folder, "rev-parse", "--git-dir"],
                               capture_output=True, check=False)
        if found.returncode:
            raise UsageError(f"--git {spec!r}: {folder} is not a git repository")
        clones[project] = Path(folder).resolve()
    return clones


def command(args: argparse.Namespace) -> int:
    """``bgmatrix fidelity``: exit 0 when every failure is explained and no line broke."""
    chosen = choose(store.load_cells())
    lines = pick(chosen, args.lines) if args.lines else list(chosen)
    if args.project:
        lines = [k for k in lines if k.startswith(args.project + "-")]
    if args.list:
        for line in lines:
            print(f"{line}: {chosen[line]['id']}")
        return 0
    clones = git_clones(args.git)
    out = Path(args.out)
    old = load(out)  # a corrupt record is refused before anything slow starts
    measured: dict[str, dict[str, Any]] = {}
    if not args.explain:
        for line in lines:
            with tempfile.TemporaryDirectory(prefix="bgmatrix-fidelity-") as tmp:
                measured[line] = measure(line, chosen[line], Path(tmp),
                                         clones.get(line.partition("-")[0]))
            print(summary(line, measured[line]), flush=True)
            write(record(measured, old), out)  # kept line by line: Ctrl-C loses one line
    data = record(measured, old)
    changed = write(data, out)
    print(f"record: {out}" + ("" if changed or measured else " (unchanged)"))
    left = unexplained(data)
    for item in left:
        print(f"unexplained failure: {item}")
    broken = [k for k, e in data["lines"].items() if e["state"] in ("error", "install-error")]
    return 1 if left or broken else 0

