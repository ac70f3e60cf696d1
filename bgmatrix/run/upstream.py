"""The upstream-ready pull request for FastAPI #11215, checked from the source distribution.

``candidates/upstream/pr.patch`` is one unified diff against FastAPI's repository at the base
release: the routing change of ``candidates/recommended.patch``, FastAPI-style tests, a
``docs_src`` example with its test, the docs pages and a release-note entry.  ``bgmatrix
upstream``:

1. splits the patch by file: what the source distribution ships (``fastapi/``, ``tests/``,
   ``docs_src/``) is applied to it; the docs pages, which it lacks, are checked with
   ``git apply --check`` against a checkout of the repository (``--fastapi-git``), at the
   release's tag or, when that tag is missing there, the next ``--docs-ref`` given;
2. installs FastAPI's own test environment as ``bgmatrix candidates --regression`` does
   (its ``tests`` group, the ``all`` extra, the base's Starlette and date cutoff);
3. runs FastAPI's full suite under FastAPI's own coverage configuration (its pyproject
   ``[tool.coverage.*]``, through pytest-cov as its ``scripts/test-cov.sh`` does);
4. measures the coverage of exactly the lines the patch adds under ``fastapi/``;
5. runs any failing test again alone, with the patch and on the unpatched release: one that
   passes alone is flaky (FastAPI's subprocess telemetry tests time out on a busy machine),
   one that fails without the patch too is reported as such; neither is blamed on the patch.

It writes ``candidates/upstream/check.json`` (``schema/upstream.schema.json``) and prints a
one-paragraph summary; the exit code is 0 when the check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgmatrix import results, schemas
from bgmatrix.run import candidates, runner
from bgmatrix.run.candidates import CandidateError
from bgmatrix.spec import ROOT

UPSTREAM_DIR = candidates.CANDIDATES_DIR / "upstream"
PR_PATCH = UPSTREAM_DIR / "pr.patch"
CHECK_PATH = UPSTREAM_DIR / "check.json"
WORK = runner.WORK_DIR / "upstream"

#: Where the lines that must be covered live: the framework, not its tests or docs.
MEASURED_PREFIX = "fastapi/"

#: pytest-cov, as FastAPI's scripts/test-cov.sh uses it; the settings (source, omit, core,
#: parallel data files, relative paths) come from the release's own pyproject.
COVERAGE_ARGS = ("--cov", "--cov-report=")

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_BAD = ("failed", "errored")


# -- the patch: files, hunks and added lines (pure) ---------------------------------------------


@dataclass(frozen=True)
class FileDiff:
    """One file's part of a unified diff."""

    path: str  # the new path, without the ``b/`` prefix
    new_file: bool
    text: str  # the section, from its ``diff --git`` (or ``---``) line to the next file's


def split_patch(text: str) -> list[FileDiff]:
    """The patch's file sections, in order; text before the first file is dropped."""
    starts = []
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("diff --git "):
            starts.append(i)
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith(
                "+++ ") and not (starts and _in_header(lines, starts[-1], i)):
            starts.append(i)
    out = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        section = lines[start:end]
        plus = next(line for line in section if line.startswith("+++ "))
        minus = next(line for line in section if line.startswith("--- "))
        path = _strip_prefix(plus[4:].rstrip("\n").split("\t")[0])
        out.append(FileDiff(path=path, new_file=minus[4:].startswith("/dev/null"),
                            text="".join(section)))
    return out


def _in_header(lines: list[str], start: int, i: int) -> bool:
    """Whether line ``i`` is the ``---`` of the ``diff --git`` section opened at ``start``."""
    return not any(line.startswith("@@") for line in lines[start:i])


def _strip_prefix(path: str) -> str:
    return path[2:] if path.startswith(("a/", "b/")) else path


def hunks(section: str) -> list[str]:
    """A file section's hunks, each from its ``@@`` line to the next."""
    out: list[str] = []
    for line in section.splitlines(keepends=True):
        if line.startswith("@@"):
            out.append(line)
        elif out:
            out[-1] += line
    return out


def added_lines(text: str) -> dict[str, list[int]]:
    """For each file of a unified diff, the new-file line numbers of the lines it adds."""
    found: dict[str, list[int]] = {}
    for diff in split_patch(text):
        numbers: list[int] = []
        for hunk in hunks(diff.text):
            match = _HUNK.match(hunk)
            if match is None:
                continue
            line_no = int(match.group(3))
            for line in hunk.splitlines()[1:]:
                if line.startswith("+"):
                    numbers.append(line_no)
                    line_no += 1
                elif line.startswith(" ") or line == "":
                    line_no += 1
                # "-" lines and "\ No newline at end of file" do not exist in the new file
        found[diff.path] = numbers
    return found


def coverage_of_added(added: Mapping[str, Sequence[int]], report: Mapping[str, Any],
                      prefix: str = MEASURED_PREFIX) -> dict:
    """How many of the added lines under ``prefix`` a coverage.py JSON ``report`` executed.

    Only statements count (coverage.py's ``executed_lines`` and ``missing_lines``): an added
    comment, blank line or the continuation of a statement is neither covered nor missed.
    A file the report lacks has every added line missing, so nothing passes by omission.
    """
    files = report.get("files", {})
    per_file: dict[str, dict[str, Any]] = {}
    total = covered = 0
    for path in sorted(p for p in added if p.startswith(prefix) and p.endswith(".py")):
        lines = set(added[path])
        data = files.get(path)
        if data is None:
            statements, executed, excluded = lines, set(), set()
        else:
            executed = set(data.get("executed_lines", []))
            statements = executed | set(data.get("missing_lines", []))
            excluded = set(data.get("excluded_lines", []))
        measured = sorted(lines & statements)
        hit = sorted(lines & executed)
        per_file[path] = {
            "added": sorted(lines),
            "statements": measured,
            "covered": hit,
            "missing": sorted(set(measured) - set(hit)),
            "excluded": sorted(lines & excluded),
            "in_report": data is not None,
        }
        total += len(measured)
        covered += len(hit)
    return {
        "prefix": prefix,
        "files": per_file,
        "added_lines": sum(len(f["added"]) for f in per_file.values()),
        "added_statements": total,
        "covered_statements": covered,
        "percent": round(100.0 * covered / total, 2) if total else 100.0,
    }


def file_coverage(report: Mapping[str, Any], paths: Iterable[str]) -> dict[str, float | None]:
    """coverage.py's own percent for each of ``paths`` (None: not in the report)."""
    files = report.get("files", {})
    return {p: (round(files[p]["summary"]["percent_covered"], 2) if p in files else None)
            for p in sorted(paths)}


def for_sdist(diff: FileDiff, tree: Path) -> bool:
    """Whether a file section belongs to the source distribution: a file it has, or a new
    file in a folder it has.  The docs pages (not shipped) go to the repository check."""
    target = tree / diff.path
    return target.is_file() if not diff.new_file else target.parent.is_dir()


# -- the steps --------------------------------------------------------------------------------


def repository_check(docs: str, files: Sequence[str], git_dir: Path | None,
                     refs: Sequence[str]) -> dict:
    """``git apply --check`` of the sections the source distribution lacks, against the first
    of ``refs`` the repository ``git_dir`` has (exported with ``git archive``)."""
    record: dict[str, Any] = {"files": sorted(files), "refs_tried": list(refs), "ref": None,
                              "commit": None, "status": "skip", "message": ""}
    if not files:
        record["message"] = "every file of the patch is in the source distribution"
        return record
    if git_dir is None:
        record["message"] = "no --fastapi-git repository given"
        return record
    for ref in refs:
        proc = subprocess.run(["git", "-C", str(git_dir), "rev-parse", "--verify", "--quiet",
                               f"{ref}^{{commit}}"], capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            record["ref"], record["commit"] = ref, proc.stdout.strip()
            break
    else:
        record["message"] = f"none of {', '.join(refs)} is in {git_dir.name}"
        return record
    with tempfile.TemporaryDirectory(prefix="bgmatrix-upstream-") as tmp:
        existing = [f for f in files if subprocess.run(
            ["git", "-C", str(git_dir), "cat-file", "-e", f"{record['commit']}:{f}"],
            capture_output=True, timeout=60).returncode == 0]
        if existing:
            archive = subprocess.run(["git", "-C", str(git_dir), "archive", record["commit"],
                                      "--", *existing], capture_output=True, timeout=120,
                                     check=True).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
                candidates._extract_safely(tf, Path(tmp))
        patch_file = Path(tmp) / ".docs.patch"
        patch_file.write_text(docs, encoding="utf-8")
        proc = subprocess.run(["git", "apply", "--check", "-v", patch_file.name], cwd=tmp,
                              capture_output=True, text=True, timeout=60)
    said = (proc.stdout + proc.stderr).strip().splitlines() or ["no output"]
    record["status"] = "pass" if proc.returncode == 0 else "fail"
    record["message"] = said[-1][:300]
    return record


def make_env(tree: Path, base: candidates.Base, wheel: Path) -> Path:
    """FastAPI's test environment, installed as the regression mode installs it."""
    exe = candidates.interpreters.find(candidates.PYTHON)
    if exe is None:
        raise CandidateError(f"no CPython {candidates.PYTHON} on this machine")
    env_dir = WORK / "env"
    shutil.rmtree(env_dir, ignore_errors=True)
    candidates._checked([candidates._uv(), "venv", "-q", "--no-project", "-p", str(exe),
                         str(env_dir)], "uv venv")
    python = env_dir / "bin" / "python"
    candidates._checked(candidates.install_command(python, tree, base, wheel.as_uri()),
                        "installing FastAPI's tests group")
    return python


def suite_command(tree: Path, junit: Path, coverage_json: Path | None,
                  only: Sequence[str] = ()) -> list[str]:
    """The regression mode's pytest arguments, plus coverage for the full run."""
    cmd = candidates.suite_command(tree, junit, only)
    if coverage_json is not None:
        cmd[:0] = [*COVERAGE_ARGS, f"--cov-report=json:{coverage_json}"]
    return cmd


def run_suite(python: Path, tree: Path, wheel: Path, label: str,
              coverage_json: Path | None, only: Sequence[str] = ()) -> candidates.SuiteRun:
    """Install ``wheel`` alone and run FastAPI's suite (or ``only``) from ``tree``."""
    candidates._checked([candidates._uv(), "pip", "install", "-q", "--python", str(python),
                         "--no-deps", "--reinstall", str(wheel)], f"installing the {label} wheel")
    junit = WORK / f"{label}.xml"
    junit.unlink(missing_ok=True)
    shutil.rmtree(tree / "coverage", ignore_errors=True)
    cmd = [str(python), "-m", "pytest", *suite_command(tree, junit, coverage_json, only)]
    try:
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                              env=runner.child_env(LANG="C.UTF-8"), errors="replace",
                              timeout=candidates.FASTAPI_SUITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CandidateError(f"FastAPI's suite ({label}) took over "
                             f"{candidates.FASTAPI_SUITE_TIMEOUT}s") from None
    (WORK / f"{label}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if not junit.is_file():
        said = runner.tail(proc.stdout + proc.stderr).splitlines() or ["no output"]
        raise CandidateError(f"FastAPI's suite ({label}) did not run: {said[-1]}")
    outcomes, messages = candidates.junit_outcomes(junit)
    return candidates.SuiteRun(proc.returncode, outcomes, messages)


def routing_matches(pr_text: str, recommended_text: str) -> bool:
    """Whether the PR changes ``fastapi/`` with exactly the recommended patch's hunks."""
    def code(text: str) -> dict[str, list[str]]:
        return {d.path: hunks(d.text) for d in split_patch(text)
                if d.path.startswith(MEASURED_PREFIX)}
    return bool(code(pr_text)) and code(pr_text) == code(recommended_text)


def failures(with_patch: candidates.SuiteRun, rerun: candidates.SuiteRun | None,
             without: candidates.SuiteRun | None) -> list[dict]:
    """Every failing test of the full run, with its outcome when run again alone with the
    patch (``rerun``) and on the unpatched release (``without``; "absent": the patch adds
    it).  It is the patch's doing only when it fails again alone with the patch and does not
    fail without it; one that passes alone is flaky (a timeout on a busy machine)."""
    out = []
    for test, outcome in sorted(with_patch.outcomes.items()):
        if outcome in _BAD:
            again = rerun.outcomes.get(test, "absent") if rerun else "not run"
            before = without.outcomes.get(test, "absent") if without else "not run"
            out.append({"test": test, "outcome": outcome, "on_rerun_with_patch": again,
                        "without_patch": before,
                        "flaky": again not in _BAD and again != "not run",
                        "caused_by_patch": again in _BAD + ("not run",) and before not in _BAD,
                        "message": with_patch.messages.get(test, "")})
    return out


def _stamp(sdist_patch: Path, base: candidates.Base) -> str:
    return hashlib.sha256(sdist_patch.read_bytes() + repr(base).encode()
                          + " ".join(COVERAGE_ARGS).encode()).hexdigest()


# -- the whole check ---------------------------------------------------------------------------


def check(git_dir: Path | None, refs: Sequence[str], patch: Path = PR_PATCH,
          reuse: bool = False) -> dict:
    if not patch.is_file():
        raise CandidateError(f"{patch} does not exist")
    text = patch.read_text(encoding="utf-8")
    base = candidates.base_release()
    refs = list(refs) or [base.fastapi]
    WORK.mkdir(parents=True, exist_ok=True)
    archive = candidates.sdist(base.fastapi)
    probe = candidates.unpack(archive, WORK / "src" / "probe")
    diffs = split_patch(text)
    if not diffs:
        raise CandidateError(f"{patch.name} holds no file diff")
    in_sdist = [d for d in diffs if for_sdist(d, probe)]
    elsewhere = [d for d in diffs if d not in in_sdist]
    shutil.rmtree(probe.parent, ignore_errors=True)

    sdist_patch = WORK / "sdist.patch"  # the PR minus the files the sdist lacks
    results.write_text_atomic(sdist_patch, "".join(d.text for d in in_sdist))
    docs = repository_check("".join(d.text for d in elsewhere),
                            [d.path for d in elsewhere], git_dir, refs)

    tree = candidates.unpack(archive, WORK / "src" / "patched")
    candidates.apply_patch(tree, sdist_patch)
    wheel = candidates.patched_wheel(sdist_patch, base, "upstream")
    coverage_json = WORK / "coverage.json"
    stamp = WORK / "last-run.stamp"
    reused = (reuse and stamp.is_file() and stamp.read_text() == _stamp(sdist_patch, base)
              and coverage_json.is_file() and (WORK / "upstream.xml").is_file()
              and (WORK / "env" / "bin" / "python").is_file())
    if reused:  # the last full run of this very patch and environment, graded again
        python = WORK / "env" / "bin" / "python"
        outcomes, messages = candidates.junit_outcomes(WORK / "upstream.xml")
        code = int((WORK / "upstream.exit").read_text()) if (WORK / "upstream.exit").is_file() \
            else 1
        with_patch = candidates.SuiteRun(code, outcomes, messages)
    else:
        stamp.unlink(missing_ok=True)
        python = make_env(tree, base, wheel)
        coverage_json.unlink(missing_ok=True)
        with_patch = run_suite(python, tree, wheel, "upstream", coverage_json)
        (WORK / "upstream.exit").write_text(str(with_patch.exit_code))
        if coverage_json.is_file():
            stamp.write_text(_stamp(sdist_patch, base))
    if not coverage_json.is_file():
        raise CandidateError("FastAPI's suite wrote no coverage report (see "
                             f"{WORK / 'upstream.log'})")
    report = json.loads(coverage_json.read_text(encoding="utf-8"))

    failing = sorted(t for t, o in with_patch.outcomes.items() if o in _BAD)
    rerun = without = None
    if failing:  # are they the patch's doing? alone with it, then on the unpatched release
        rerun = run_suite(python, tree, wheel, "upstream-rerun", None,
                          [candidates.node_id(tree, t) for t in failing])
        plain_tree = candidates.unpack(archive, WORK / "src" / "unpatched")
        present = [candidates.node_id(plain_tree, t) for t in failing]
        present = [t for t in present if (plain_tree / t.split("::")[0]).is_file()]
        plain_wheel = candidates.patched_wheel(None, base, "unpatched")
        without = run_suite(python, plain_tree, plain_wheel, "unpatched-rerun", None,
                            present) if present else candidates.SuiteRun(0, {}, {})
    failed = failures(with_patch, rerun, without)

    added = added_lines(text)
    measured = coverage_of_added(added, report)
    new_py = [d.path for d in in_sdist if d.new_file and d.path.endswith(".py")]
    recommended = candidates.CANDIDATES_DIR / "recommended.patch"
    caused = [f["test"] for f in failed if f["caused_by_patch"]]
    flaky = [f["test"] for f in failed if f["flaky"]]
    ok = (not caused and measured["percent"] == 100.0 and docs["status"] != "fail")
    uv = candidates._uv()
    return {
        "about": "The upstream-ready PR (candidates/upstream/pr.patch) checked from FastAPI's "
                 "source distribution: its full test suite with coverage, and the coverage "
                 "of the lines the PR adds under fastapi/; see candidates/upstream/README.md",
        "base": {"fastapi": base.fastapi, "starlette": base.starlette,
                 "python": candidates.PYTHON, "cutoff": base.cutoff},
        "patch": {
            "path": patch.relative_to(ROOT).as_posix() if patch.is_relative_to(ROOT)
            else patch.name,
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "files": {d.path: {"applied_to": "sdist" if d in in_sdist else "repository",
                               "new": d.new_file,
                               "added": len(added.get(d.path, []))} for d in diffs},
            "routing_matches_recommended": routing_matches(
                text, recommended.read_text(encoding="utf-8")) if recommended.is_file()
            else False,
        },
        "repository_check": docs,
        "commands": {
            "apply": "patch -p1 --batch --forward --silent -i <pr.patch minus the files the "
                     "sdist lacks>" if shutil.which("patch") else "git apply <pr.patch minus "
                     "the files the sdist lacks>",
            "install": " ".join(candidates.install_command(
                Path("<env>/bin/python"), Path("<sdist>"), base, "file://<wheel>")
            ).replace(uv, "uv"),
            "test": "python -m pytest " + " ".join(suite_command(
                tree, Path("<junit.xml>"), Path("<coverage.json>"))),
            "rerun": "python -m pytest " + " ".join(suite_command(
                tree, Path("<junit.xml>"), None, ["<each failing test>"])) + "  (with the PR, "
                "then in the unpacked sdist without it, the unpatched wheel installed)",
            "repository_check": "git archive <ref> -- <files> | tar -x; "
                                "git apply --check -v <the PR's sections for those files>",
            "cwd": "the unpacked source distribution with the PR applied",
        },
        "suite": {
            "counts": with_patch.counts(),
            "pytest_exit_code": with_patch.exit_code,
            "failures": failed,
            "caused_by_patch": caused,
            "flaky": flaky,
            "failing_without_patch_too": [f["test"] for f in failed
                                          if f["without_patch"] in _BAD],
            "reused_last_run": reused,
        },
        "coverage": measured,
        "new_files_coverage": file_coverage(report, new_py),
        "coverage_totals": {"percent": round(report.get("totals", {}).get(
            "percent_covered", 0.0), 2)},
        "environment": {"python": candidates._python_version(python),
                        "packages": runner.freeze(python)},
        "verdict": "pass" if ok else "fail",
    }


def write_check(record: dict, path: Path = CHECK_PATH) -> None:
    found = schemas.problem(record, "upstream")
    if found is not None:  # never commit a record its schema refuses
        raise CandidateError(f"upstream check record: {found}")
    results.write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def describe(record: Mapping[str, Any]) -> str:
    """One paragraph: what ran, what it gave, and the verdict."""
    c = record["suite"]["counts"]
    cov = record["coverage"]
    docs = record["repository_check"]
    failing = record["suite"]["failures"]
    blamed = record["suite"]["caused_by_patch"]
    parts = [
        f"FastAPI {record['base']['fastapi']} with candidates/upstream/pr.patch "
        f"(Starlette {record['base']['starlette']}, Python {record['environment']['python']}): "
        f"its full suite gave {c['passed']} passed, {c['failed']} failed, {c['errored']} "
        f"errored, {c['skipped']} skipped of {c['total']}",
        f"{len(failing)} failing test(s) in the full run: {len(blamed)} caused by the patch"
        + (f" ({', '.join(blamed[:5])})" if blamed else "")
        + f", {len(record['suite']['flaky'])} flaky (passed when run again alone with it)"
        + f", {len(record['suite']['failing_without_patch_too'])} failing without it too"
        + (" (the last full run, graded again)" if record["suite"]["reused_last_run"] else ""),
        f"coverage of the lines it adds under {cov['prefix']}: {cov['covered_statements']}/"
        f"{cov['added_statements']} statements ({cov['percent']:.2f} %) of "
        f"{cov['added_lines']} added lines",
        "the routing change is " + ("identical to" if record["patch"][
            "routing_matches_recommended"] else "NOT the same as")
        + " candidates/recommended.patch",
        f"docs sections ({len(docs['files'])} file(s) the sdist lacks): {docs['status']}"
        + (f" against {docs['ref']}" if docs["ref"] else "")
        + (f" ({docs['message']})" if docs["message"] else ""),
    ]
    return "; ".join(parts) + f". Verdict: {record['verdict']}."


# -- command line ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch", default=str(PR_PATCH), help="the PR's unified diff")
    p.add_argument("--fastapi-git", metavar="GIT_DIR",
                   help="a clone (or bare mirror) of the fastapi repository, to check the "
                        "docs sections the source distribution lacks")
    p.add_argument("--docs-ref", action="append", default=[], metavar="REF",
                   help="the ref to check them against; repeat for fallbacks, the first "
                        "present is used (default: the base release's tag)")
    p.add_argument("--output", default=str(CHECK_PATH), help="where the record goes")
    p.add_argument("--reuse-last-run", action="store_true",
                   help="grade the last full run again when it ran this very patch in this "
                        "environment (the record says so), instead of running the suite")


def command(args: argparse.Namespace) -> int:
    """``bgmatrix upstream``: 0 when the PR passes FastAPI's suite with full coverage of the
    lines it adds (and its docs apply where checked), 1 otherwise."""
    git_dir = Path(args.fastapi_git) if args.fastapi_git else None
    if git_dir is not None and not git_dir.exists():
        raise CandidateError(f"--fastapi-git {git_dir}: no such folder")
    record = check(git_dir, args.docs_ref, Path(args.patch).resolve(), args.reuse_last_run)
    write_check(record, Path(args.output))
    print(describe(record))
    return 0 if record["verdict"] == "pass" else 1
