"""Candidate resolutions of FastAPI #11215: patches to the newest release, run like cells.

Each ``candidates/<name>.patch`` is a small unified diff against the source distribution of
the newest FastAPI release in matrix/plan.json.  ``build(name)`` applies it and builds a
wheel; ``run(...)`` runs the spec suite on that wheel in a fresh cell of kind ``candidate``
and writes ``results/candidate-<name>_py3.11.json``.  Any other build is graded the same way:
a source tree, a wheel, a source distribution, a ``.patch`` file or a ``git+`` URL.

``--regression`` runs FastAPI's own test suite, shipped in that source distribution, once
without a patch and once with each, and writes ``candidates/regression.json``: a resolution
must not break what FastAPI already tests.

    bgmatrix candidates                    every candidate
    bgmatrix candidates recommended warn   some of them
    bgmatrix candidates ../fastapi         a source tree (or .whl, .tar.gz, .patch)
    bgmatrix candidates git+https://example.org/fork/fastapi.git@branch
    bgmatrix candidates --regression       FastAPI's own suite, with and without

Every user error is one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import tomllib  # stdlib since 3.11; ruff, set to the suite's 3.8, files it here
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from bgmatrix import files, results, schemas, spec
from bgmatrix.errors import BgmatrixError
from bgmatrix.plan import index, store
from bgmatrix.run import interpreters, runner
from bgmatrix.spec import ROOT

CANDIDATES_DIR = ROOT / "candidates"
CACHE_DIR = runner.WORK_DIR / "candidates"
REGRESSION_PATH = CANDIDATES_DIR / "regression.json"

#: Candidates run on one interpreter: the newest release needs 3.11+, and one cell per
#: candidate keeps the comparison between candidates, not between interpreters.
PYTHON = "3.11"

BUILD_TIMEOUT = 600  # seconds; a cold cache fetches the build backend first
CLONE_TIMEOUT = 600
FASTAPI_SUITE_TIMEOUT = 3600  # FastAPI's own suite takes minutes on two cores, never an hour

#: FastAPI's own suite with its own configuration (warnings are errors, 20 s per test), minus
#: the cache folder and the progress bar; JUnit XML gives every test's outcome to compare.
FASTAPI_SUITE_ARGS = ("-p", "no:cacheprovider", "-p", "no:sugar", "-q", "-rfE")

#: Tests of FastAPI's own suite left out, each with the reason.  Empty since the ``all``
#: extra is installed: every test then runs offline here and the unpatched run has no
#: failure.  The suite's own skips (orjson, ujson, Python 3.14) are listed in the report.
FASTAPI_SUITE_DESELECT: dict[str, str] = {}

_SLUG = re.compile(r"[^A-Za-z0-9._+-]+")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_WORST_FIRST = ("errored", "failed", "skipped", "passed")
_BAD = ("failed", "errored")


class CandidateError(BgmatrixError):
    """A target is not a FastAPI build, or a step before the suite failed (one line)."""


# -- the base release --------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """The release the candidates patch, and the environment they run in, from the plan."""

    fastapi: str
    starlette: str
    python: str
    cutoff: str | None
    in_declared_range: bool | None


def base_release(plan_path: Path = store.PLAN_PATH) -> Base:
    """The newest planned FastAPI release, with the newest planned Starlette, on 3.11."""
    try:
        data = store.load_plan(plan_path)
    except store.PlanError as exc:
        raise CandidateError(str(exc)) from None
    if not data["fastapi"] or not data["starlette"]:
        raise CandidateError(f"{plan_path}: no FastAPI or Starlette release is planned")
    fastapi = max((e["version"] for e in data["fastapi"]), key=Version)
    starlette = max((e["version"] for e in data["starlette"]), key=Version)
    # That pair's planned cell carries the cutoff: every other dependency resolves as of the
    # release's date, exactly as in the release's own cell, so a candidate differs from its
    # release by the patch alone.
    planned = next((c for c in data["cells"] if c["fastapi"] == fastapi
                    and c["starlette"] == starlette and c["python"] == PYTHON), None)
    return Base(
        fastapi=fastapi,
        starlette=starlette,
        python=PYTHON,
        cutoff=planned["cutoff"] if planned else None,
        in_declared_range=planned["in_declared_range"] if planned else None,
    )


# -- sources and wheels ------------------------------------------------------------------------


def names() -> list[str]:
    """Every candidate: one per patch file in candidates/."""
    return sorted(p.stem for p in CANDIDATES_DIR.glob("*.patch"))


def patch_path(name: str) -> Path:
    path = CANDIDATES_DIR / f"{name}.patch"
    if not path.is_file():
        raise CandidateError(f"unknown candidate {name!r}; candidates: {', '.join(names())}")
    return path


def header(patch: Path) -> str:
    """The patch's header comment: the lines before the diff, which ``patch`` ignores."""
    lines = []
    for line in patch.read_text(encoding="utf-8").splitlines():
        if line.startswith(("diff ", "--- ", "Index: ")):
            break
        lines.append(line)
    return "\n".join(lines).strip()


def sdist_path(version: str) -> Path:
    return CACHE_DIR / "sdist" / f"fastapi-{version}.tar.gz"


def sdist(version: str) -> Path:
    """FastAPI's source distribution of ``version``, downloaded once into the cache."""
    target = sdist_path(version)
    if target.is_file():
        return target
    try:
        client = index.make_client()
        listed = index.project_files(client, "fastapi").get(version, [])
        found = [f for f in listed if f.package_type == "sdist" and f.filename.endswith(".tar.gz")]
        if not found:
            raise CandidateError(f"FastAPI {version} has no .tar.gz source distribution")
        # index is the one module that talks to the index; it also checks the sha256.
        data = index._download(client, found[0])
    except index.IndexUnavailable as exc:
        raise CandidateError(str(exc)) from None
    files.write_bytes_atomic(target, data)
    return target


def _extract_safely(tf: tarfile.TarFile, dest: Path) -> None:
    """Extract with the "data" filter: no links or paths that leave ``dest``. Interpreters
    older than the filter (Debian 12's Python 3.11.2 among them) get the same refusal here."""
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for member in tf.getmembers():
        target = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
            raise tarfile.TarError(f"refused member {member.name!r}: a link or a path "
                                   "outside the archive's folder")
    tf.extractall(dest)  # every member checked above


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a source distribution into ``dest`` (replaced); return its top folder."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                _extract_safely(tf, dest)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        first = (str(exc).splitlines() or [""])[0]
        raise CandidateError(
            f"{archive}: not a readable source distribution ({type(exc).__name__}: {first})"
        ) from None
    tops = [p for p in dest.iterdir() if p.is_dir()]
    return tops[0] if len(tops) == 1 else dest


def source_tree(patch: Path | None, base: Base, label: str) -> Path:
    """A fresh copy of the base release's source with ``patch`` applied (None: unpatched)."""
    tree = unpack(sdist(base.fastapi), CACHE_DIR / "src" / label)
    if patch is not None:
        apply_patch(tree, patch)
    return tree


def apply_patch(tree: Path, patch: Path) -> None:
    if shutil.which("patch"):
        # --forward: an already applied patch is an error, not a silent reversal.
        cmd = ["patch", "-p1", "--batch", "--forward", "--silent", "-i", str(patch.resolve())]
    else:
        cmd = ["git", "apply", str(patch.resolve())]
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=60)
    if proc.returncode:
        said = (proc.stdout + proc.stderr).strip().splitlines() or ["no output"]
        raise CandidateError(f"{patch.name} does not apply to {tree.name}: {said[-1]}")


def build_wheel(tree: Path, out: Path) -> Path:
    """Build ``tree`` into a wheel in ``out`` (replaced) with uv; return the wheel."""
    staging = out.with_name(out.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [_uv(), "build", "--wheel", "--quiet", "--out-dir", str(staging)]
    exe = interpreters.find(PYTHON)
    if exe is not None:
        cmd += ["--python", str(exe)]
    try:
        proc = subprocess.run(cmd + [str(tree)], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT, env=runner.uv_env())
    except subprocess.TimeoutExpired:
        raise CandidateError(f"building {tree} took over {BUILD_TIMEOUT}s") from None
    wheels = sorted(staging.glob("*.whl"))
    if proc.returncode or len(wheels) != 1:
        said = runner.tail(proc.stdout + proc.stderr).splitlines() or ["no output"]
        shutil.rmtree(staging, ignore_errors=True)
        raise CandidateError(f"building {tree} failed: {said[-1]}")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out / wheels[0].name


def _uv() -> str:
    uv = shutil.which("uv")
    if not uv:
        raise CandidateError("uv is not installed: pip install uv")
    return uv


def patched_wheel(patch: Path | None, base: Base, label: str) -> Path:
    """The wheel of the base release with ``patch`` applied, cached by the inputs' content."""
    digest = hashlib.sha256(sdist(base.fastapi).read_bytes())
    digest.update(b"\0" + (patch.read_bytes() if patch else b""))
    # The content key also keeps uv's cache honest: a changed patch is a new wheel path.
    out = CACHE_DIR / "wheels" / f"{label}-{digest.hexdigest()[:12]}"
    built = sorted(out.glob("*.whl"))
    if built:
        return built[0]
    return build_wheel(source_tree(patch, base, label), out)


def build(name: str) -> Path:
    """Apply candidate ``name`` to the newest planned FastAPI release; return its wheel."""
    return patched_wheel(patch_path(name), base_release(), name)


# -- any build ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """A FastAPI wheel to grade, and what its result calls it."""

    label: str  # cell.candidate: a candidate's name, or the build's file or folder name
    wheel: Path
    fastapi: str  # the version the wheel declares
    patched: bool  # a patch to the base release: it runs with the base release's cutoff
    patch: Path | None = None  # that patch, whose content the result records (see build_record)


def slug(label: str) -> str:
    return _SLUG.sub("-", label).strip("-.") or "build"


def resolve(target: str, base: Base) -> Build:
    """Turn a command-line target into a built wheel, or raise one line saying why not."""
    if target in names():
        patch = patch_path(target)
        return Build(target, patched_wheel(patch, base, target), base.fastapi, True, patch)
    if target.startswith("git+"):
        return _from_vcs(target)
    path = Path(target).expanduser()
    if not path.exists():
        if "/" not in target and "." not in target:
            raise CandidateError(
                f"unknown candidate {target!r}; candidates: {', '.join(names())}"
            )
        raise CandidateError(f"{target}: no such file or directory")
    if path.is_dir():
        return _from_tree(path, path.resolve().name)
    if path.suffix == ".patch":
        label = slug(path.stem)
        return Build(path.stem, patched_wheel(path, base, f"patch-{label}"), base.fastapi, True,
                     path.resolve())
    if path.name.endswith(".whl"):
        return _from_wheel(path)
    if path.name.endswith((".tar.gz", ".zip")):
        return _from_sdist(path)
    raise CandidateError(
        f"{target}: not a FastAPI build (expected a candidate name, a source tree, a .whl, "
        "a .tar.gz or .zip source distribution, a .patch or a git+ URL)"
    )


def _from_wheel(path: Path) -> Build:
    try:
        name, version, _, _ = parse_wheel_filename(path.name)
    except InvalidWheelFilename:
        raise CandidateError(f"{path}: not a wheel file name") from None
    if name != "fastapi":
        raise CandidateError(f"{path}: a wheel of {name}, not of FastAPI")
    try:
        with zipfile.ZipFile(path) as zf:
            has_package = "fastapi/__init__.py" in zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CandidateError(f"{path}: not a readable wheel ({exc})") from None
    if not has_package:
        raise CandidateError(f"{path}: not a FastAPI build (no fastapi/__init__.py inside)")
    return Build(path.stem, path.resolve(), str(version), False)


def _from_sdist(path: Path) -> Build:
    try:
        name, _ = parse_sdist_filename(path.name)
    except InvalidSdistFilename:
        raise CandidateError(f"{path}: not a source distribution file name") from None
    if name != "fastapi":
        raise CandidateError(f"{path}: a source distribution of {name}, not of FastAPI")
    label = path.name.removesuffix(".tar.gz").removesuffix(".zip")
    tree = unpack(path, CACHE_DIR / "src" / f"sdist-{slug(label)}")
    return _from_tree(tree, label)


def _from_tree(tree: Path, label: str) -> Build:
    check_tree(tree)
    wheel = build_wheel(tree, CACHE_DIR / "wheels" / f"build-{slug(label)}")
    version = str(parse_wheel_filename(wheel.name)[1])
    return Build(label, wheel, version, False)


def check_tree(tree: Path) -> None:
    """Raise unless ``tree`` is a buildable FastAPI source tree."""
    if not (tree / "fastapi" / "__init__.py").is_file():
        raise CandidateError(f"{tree}: not a FastAPI source tree (no fastapi/__init__.py)")
    pyproject = tree / "pyproject.toml"
    if not pyproject.is_file() and not (tree / "setup.py").is_file():
        raise CandidateError(f"{tree}: no pyproject.toml or setup.py to build it with")
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CandidateError(f"{pyproject}: unreadable ({exc})") from None
        name = project.get("name")
        if name and canonicalize_name(name) != "fastapi":
            raise CandidateError(f"{tree}: builds {name}, not FastAPI")


def split_vcs_url(url: str) -> tuple[str, str | None]:
    """``git+<url>[@ref][#fragment]`` as (clone URL, ref); the ref may be absent."""
    parts = urlsplit(url.removeprefix("git+"))
    path, ref = parts.path, None
    # An "@" in the path (not in the user@host part) separates the ref, as pip reads it.
    if "@" in path:
        path, ref = path.rsplit("@", 1)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")), ref or None


def _from_vcs(url: str) -> Build:
    clone_url, ref = split_vcs_url(url)
    if not shutil.which("git"):
        raise CandidateError("git is not installed; it is needed for git+ URLs")
    dest = CACHE_DIR / "vcs" / hashlib.sha256(url.encode()).hexdigest()[:12]
    shutil.rmtree(dest, ignore_errors=True)
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # fail, never prompt for credentials
    steps = [["git", "clone", "--quiet", "--filter=blob:none", clone_url, str(dest)]]
    if ref:
        steps.append(["git", "-C", str(dest), "checkout", "--quiet", ref])
    for step in steps:
        try:
            proc = subprocess.run(step, capture_output=True, text=True, env=env,
                                  timeout=CLONE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise CandidateError(f"{url}: git {step[1]} took over {CLONE_TIMEOUT}s") from None
        if proc.returncode:
            said = runner.tail(proc.stderr or proc.stdout).splitlines() or ["no output"]
            raise CandidateError(f"{url}: git {step[1]} failed: {said[-1]}")
    repo = Path(urlsplit(clone_url).path).name.removesuffix(".git") or "repo"
    return _from_tree(dest, f"{repo}@{ref}" if ref else repo)


# -- running the spec suite --------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_record(build_: Build, base: Base) -> dict[str, str]:
    """What exactly was graded (schema/result.schema.json ``cell.build``).

    A patch to the base release is named by its inputs, the base source distribution and the
    patch, byte for byte: the wheel built from them is a product, rebuilt from the same two
    files.  Any other build (a wheel, a source tree, a source distribution, a git URL) is named
    by the wheel the suite installed, the one thing all of them have in common.
    """
    if build_.patch is not None:
        return {"base_sdist_sha256": sha256_file(sdist_path(base.fastapi)),
                "patch_sha256": sha256_file(build_.patch)}
    return {"wheel_sha256": sha256_file(build_.wheel)}


def candidate_cell(build_: Build, base: Base) -> dict:
    """The cell a build runs in: the base environment, with the build instead of FastAPI."""
    return {
        "id": f"candidate-{slug(build_.label)}_py{PYTHON}",
        "kind": "candidate",
        "fastapi": build_.fastapi,
        "starlette": base.starlette,
        "python": PYTHON,
        # A patched base release resolves its other dependencies as of the release's date;
        # a build from elsewhere may need newer ones, so it resolves as of today.
        "cutoff": base.cutoff if build_.patched else None,
        "in_declared_range": base.in_declared_range if build_.patched else None,
        "candidate": build_.label,
        "build": build_record(build_, base),
        "tags": ["candidate"],
    }


def run(target: str | Build, results_dir: Path = results.RESULTS_DIR) -> results.Result:
    """Run the spec suite on a candidate (by name) or any build; write and return the result."""
    base = base_release()
    build_ = target if isinstance(target, Build) else resolve(target, base)
    cell_ = candidate_cell(build_, base)
    result = runner.run_cell(cell_, install=[str(build_.wheel), f"starlette=={base.starlette}"])
    # The runner keeps the cell fields every kind has; the build is a candidate's own.
    result["cell"]["build"] = cell_["build"]
    results.write(results_dir / f"{cell_['id']}.json", result,
                  current_methods=runner.current_methods())
    return result


def requirement_ids() -> list[str]:
    """The clauses a resolution is graded on, from spec/ (the one source of the list)."""
    return spec.resolution_requirements()


def describe(result: Mapping[str, Any]) -> str:
    """A candidate's verdict on every requirement a resolution is graded on, in spec order."""
    c = result["cell"]
    lines = [f"{c['id']} ({c['candidate']}): {result['state']} — fastapi {c['fastapi']}, "
             f"starlette {c['starlette']}, python "
             f"{result['provenance'].get('python') or c['python']}"]
    if result["message"]:
        lines.append("  " + result["message"].splitlines()[-1][:300])
    for cid in requirement_ids():
        v = result["clauses"].get(cid)
        if v is None:
            lines.append(f"  {cid:<9} (not in this result)")
            continue
        said = v["label"] if v["verdict"] != "n/a" else v.get("reason", "n/a")
        lines.append(f"  {cid:<9} {v['verdict']:<13} {said[:90]}")
    return "\n".join(lines)


# -- FastAPI's own suite -----------------------------------------------------------------------


def junit_outcomes(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Each test's outcome (passed, failed, errored, skipped) and first message line.

    A test reported twice (a teardown error after a pass) keeps its worst outcome.
    """
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child, name in (("error", "errored"), ("failure", "failed"), ("skipped", "skipped")):
            found = case.find(child)
            if found is not None:
                outcome, message = name, found.get("message") or found.text or ""
                break
        if test not in outcomes or _WORST_FIRST.index(outcome) < _WORST_FIRST.index(
                outcomes[test]):
            outcomes[test] = outcome
            # Addresses differ run to run; the file is diffed, so they are masked.
            first = (message.strip().splitlines() or [""])[0]
            messages[test] = _ADDRESS.sub("0x…", first)[:200]
    return outcomes, messages


@dataclass
class SuiteRun:
    exit_code: int
    outcomes: dict[str, str]
    messages: dict[str, str]

    def counts(self) -> dict[str, int]:
        found = Counter(self.outcomes.values())
        return {name: found.get(name, 0) for name in _WORST_FIRST} | {
            "total": len(self.outcomes)}


def regression_env(tree: Path, base: Base, wheel: Path) -> Path:
    """A Python 3.11 environment with FastAPI's ``tests`` group and the unpatched wheel."""
    exe = interpreters.find(PYTHON)
    if exe is None:
        raise CandidateError(f"no CPython {PYTHON} on this machine (never downloaded)")
    env_dir = CACHE_DIR / "regression" / "env"
    shutil.rmtree(env_dir, ignore_errors=True)
    _checked([_uv(), "venv", "-q", "--no-project", "-p", str(exe), str(env_dir)], "uv venv")
    python = env_dir / "bin" / "python"
    _checked(install_command(python, tree, base, wheel.as_uri()),
             "installing FastAPI's tests group")
    return python


def install_command(python: Path, tree: Path, base: Base, wheel: str) -> list[str]:
    """FastAPI's ``tests`` group plus the wheel with the extras its suite imports.

    The group alone lacks python-multipart, jinja2, pydantic-settings and the like, which
    FastAPI's own CI adds through the ``all`` extra; without them hundreds of tests fail for
    reasons that have nothing to do with background tasks.
    """
    cmd = [_uv(), "pip", "install", "-q", "--python", str(python)]
    if base.cutoff:
        cmd += ["--exclude-newer", base.cutoff, "--exclude-newer-package", "starlette=false"]
    return cmd + ["--group", f"{tree / 'pyproject.toml'}:tests", f"fastapi[all] @ {wheel}",
                  f"starlette=={base.starlette}"]


def _checked(cmd: list[str], what: str, timeout: float = runner.INSTALL_TIMEOUT) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=runner.uv_env())
    except subprocess.TimeoutExpired:
        raise CandidateError(f"{what} took over {timeout}s") from None
    if proc.returncode:
        said = runner.tail(proc.stdout + proc.stderr).splitlines() or ["no output"]
        raise CandidateError(f"{what} failed: {said[-1]}")


def uses_xdist(tree: Path) -> bool:
    """pytest-xdist is in FastAPI's tests group: only then is ``-n`` available."""
    groups = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8")).get(
        "dependency-groups", {})
    return any(isinstance(r, str) and r.lower().startswith("pytest-xdist")
               for r in groups.get("tests", []))


def suite_command(tree: Path, junit: Path, only: Sequence[str] = ()) -> list[str]:
    """pytest's arguments: the whole suite, or just the node ids ``only`` (a re-run)."""
    cmd = list(FASTAPI_SUITE_ARGS)
    if only:
        return cmd + ["--junit-xml", str(junit), *only]
    if uses_xdist(tree):
        cmd += ["-n", "auto"]
    for test in sorted(FASTAPI_SUITE_DESELECT):
        cmd += ["--deselect", test]
    return cmd + ["--junit-xml", str(junit), "tests"]


def node_id(tree: Path, test: str) -> str:
    """pytest's node id for a JUnit ``classname::name``: the longest prefix that is a file."""
    classname, _, name = test.partition("::")
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (tree / path).is_file():
            return "::".join([path, *parts[cut:], name])
    return test


def run_fastapi_suite(python: Path, tree: Path, wheel: Path, label: str,
                      only: Sequence[str] = ()) -> SuiteRun:
    """Install ``wheel`` (alone) and run FastAPI's suite, or the tests ``only``, from
    ``tree``, the wheel's own source."""
    _checked([_uv(), "pip", "install", "-q", "--python", str(python), "--no-deps",
              "--reinstall", str(wheel)], f"installing the {label} wheel")
    junit = CACHE_DIR / "regression" / f"{label}.xml"
    junit.unlink(missing_ok=True)
    env = runner.child_env(LANG="C.UTF-8")
    # The tests import FastAPI from the tree they run in: the same code as the wheel.
    cmd = [str(python), "-m", "pytest", *suite_command(tree, junit, only)]
    try:
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env,
                              timeout=FASTAPI_SUITE_TIMEOUT, errors="replace")
    except subprocess.TimeoutExpired:
        raise CandidateError(f"FastAPI's suite ({label}) took over "
                             f"{FASTAPI_SUITE_TIMEOUT}s") from None
    (CACHE_DIR / "regression" / f"{label}.log").write_text(proc.stdout + proc.stderr)
    if not junit.is_file():
        said = runner.tail(proc.stdout + proc.stderr).splitlines() or ["no output"]
        raise CandidateError(f"FastAPI's suite ({label}) did not run: {said[-1]}")
    outcomes, messages = junit_outcomes(junit)
    return SuiteRun(proc.returncode, outcomes, messages)


def newly_failing(without: SuiteRun, with_patch: SuiteRun) -> list[str]:
    return sorted(t for t, o in with_patch.outcomes.items()
                  if o in _BAD and without.outcomes.get(t) not in _BAD)


def compare(without: SuiteRun, with_patch: SuiteRun, rerun: SuiteRun | None = None) -> dict:
    """What a patch changed in FastAPI's suite, and what failed without it as well.

    ``rerun`` holds the newly failing tests run again, alone: one that passes then is
    reported as flaky (a timeout on a busy machine), not as a failure the patch caused.
    """
    changed = []
    for test in sorted(set(without.outcomes) | set(with_patch.outcomes)):
        before = without.outcomes.get(test, "absent")
        after = with_patch.outcomes.get(test, "absent")
        if before != after:
            entry = {"test": test, "without_patch": before, "with_patch": after,
                     "message": with_patch.messages.get(test, "")}
            if rerun is not None and after in _BAD:
                entry["on_rerun"] = rerun.outcomes.get(test, "absent")
            changed.append(entry)
    return {
        "counts": with_patch.counts(),
        "pytest_exit_code": with_patch.exit_code,
        "changed": changed,
        "new_failures": sorted(c["test"] for c in changed if c["with_patch"] in _BAD
                               and c.get("on_rerun", c["with_patch"]) in _BAD),
        "flaky": sorted(c["test"] for c in changed if c["with_patch"] in _BAD
                        and c.get("on_rerun", c["with_patch"]) not in _BAD),
        "failing_without_patch_too": sorted(
            t for t, o in with_patch.outcomes.items()
            if o in _BAD and without.outcomes.get(t) in _BAD),
    }


def regression(selected: Sequence[str]) -> dict:
    """Run FastAPI's own suite unpatched, then with each selected patch; return the report."""
    base = base_release()
    for name in selected:
        patch_path(name)  # an unknown name fails before anything slow starts
    unpatched_wheel = patched_wheel(None, base, "unpatched")
    # Trees of their own: the suite writes files where it runs, and a build may be
    # unpacking a candidate's tree at the same time.
    tree = source_tree(None, base, "suite-unpatched")
    python = regression_env(tree, base, unpatched_wheel)
    without = run_fastapi_suite(python, tree, unpatched_wheel, "unpatched")
    runs = {}
    for name in selected:
        wheel = patched_wheel(patch_path(name), base, name)
        patched_tree = source_tree(patch_path(name), base, f"suite-{name}")
        with_patch = run_fastapi_suite(python, patched_tree, wheel, name)
        suspects = newly_failing(without, with_patch)
        rerun = run_fastapi_suite(python, patched_tree, wheel, f"{name}-rerun",
                                  [node_id(patched_tree, t) for t in suspects]
                                  ) if suspects else None
        runs[name] = compare(without, with_patch, rerun)
    packages = runner.freeze(python)
    return {
        "about": "FastAPI's own test suite (tests/ of its source distribution) without and "
                 "with each candidate patch; see candidates/README.md",
        "base": {"fastapi": base.fastapi, "starlette": base.starlette, "python": PYTHON,
                 "cutoff": base.cutoff},
        "commands": {
            "install": " ".join(install_command(Path("<env>/bin/python"), Path("<sdist>"),
                                                base, "file://<wheel>")).replace(_uv(), "uv"),
            "test": "python -m pytest " + " ".join(suite_command(tree, Path("<junit.xml>"))),
            "rerun": "python -m pytest " + " ".join(suite_command(
                tree, Path("<junit.xml>"), ["<each newly failing test>"])),
            "cwd": "the unpacked source distribution, with the candidate's patch applied",
        },
        "deselected": dict(sorted(FASTAPI_SUITE_DESELECT.items())),
        "environment": {"python": _python_version(python), "packages": packages},
        "without_patch": {
            "counts": without.counts(),
            "pytest_exit_code": without.exit_code,
            "failing": sorted(t for t, o in without.outcomes.items() if o in _BAD),
            # FastAPI's own skips (optional packages, newer Pythons), kept with their reasons
            # so that "skipped" is never mistaken for "left out by this project".
            "skipped": {t: without.messages.get(t, "") for t, o in sorted(
                without.outcomes.items()) if o == "skipped"},
        },
        "with_patch": runs,
    }


def _python_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, timeout=60).stdout.strip()


def write_regression(report: dict, path: Path = REGRESSION_PATH) -> None:
    """Keep earlier candidates' runs when they were measured against the same baseline."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        old = {}
    same = all(old.get(k) == report[k] for k in ("base", "commands", "deselected",
                                                  "environment", "without_patch"))
    if same:
        report["with_patch"] = {**old.get("with_patch", {}), **report["with_patch"]}
    report["with_patch"] = dict(sorted(report["with_patch"].items()))
    found = schemas.problem(report, "regression")
    if found is not None:  # never commit a record the site would refuse
        raise CandidateError(f"regression record: {found}")
    results.write_text_atomic(path, json.dumps(report, indent=1, sort_keys=True) + "\n")


def describe_regression(report: dict) -> str:
    def counts(c: dict) -> str:
        return " ".join(f"{k} {c[k]}" for k in ("passed", "failed", "errored", "skipped"))

    lines = [f"FastAPI {report['base']['fastapi']} own suite, without patch: "
             f"{counts(report['without_patch']['counts'])}"]
    for name, run_ in report["with_patch"].items():
        lines.append(f"  {name:<32} {counts(run_['counts'])}; "
                     f"{len(run_['new_failures'])} new failure(s), "
                     f"{len(run_['flaky'])} flaky (passed when re-run alone)")
        lines.extend(f"    new: {t}" for t in run_["new_failures"])
        lines.extend(f"    flaky: {t}" for t in run_["flaky"])
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="*", metavar="NAME|PATH|WHEEL|SDIST|VCS-URL",
                   help="candidate names (default: all), or any FastAPI build")
    p.add_argument("--regression", action="store_true",
                   help="run FastAPI's own suite without and with each named candidate patch")
    p.add_argument("--results", default=str(results.RESULTS_DIR),
                   help="where result files go (default: results/)")


def command(args: argparse.Namespace) -> int:
    """``bgmatrix candidates``: exit 0 when every candidate cell ran, 1 otherwise."""
    if args.regression:
        report = regression(args.targets or names())
        write_regression(report)
        print(describe_regression(report))
        return 0
    base = base_release()
    # Every target is resolved (and built) before any suite runs: a bad one costs
    # nothing and writes nothing.
    builds = [resolve(t, base) for t in (args.targets or names())]
    states = []
    for build_ in builds:
        result = run(build_, Path(args.results))
        states.append(result["state"])
        print(describe(result))
    return 0 if all(s == "ok" for s in states) else 1
