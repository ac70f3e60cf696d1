"""Environment fidelity (`bgmatrix fidelity`, bgmatrix/run/fidelity.py): which cell stands for
a line, which tests are taken from an sdist and what they need, how a run's pytest records
become counts, the record (deterministic, schema-checked, failures explained) and bad input
(an unknown line, no sdist, no tests, a corrupt record) as a recorded state or one line.

Nothing here downloads or installs: the sdists are small archives made in the test.
"""

from __future__ import annotations

import html
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bgmatrix.errors import FidelityError, UsageError
from bgmatrix.plan import store
from bgmatrix.run import fidelity
from bgmatrix.site import fidelity as site_fidelity
from bgmatrix.site.markup import esc
from bgmatrix.spec import ROOT


def cell(kind, fastapi=None, starlette=None, python="3.8", in_range=True):
    name = (f"fa-{fastapi}_st-{starlette}" if kind == "fastapi" else f"st-{starlette}")
    return {"id": f"{name}_py{python}", "kind": kind, "fastapi": fastapi,
            "starlette": starlette, "python": python, "cutoff": "2024-01-01T00:00:00Z",
            "in_declared_range": in_range if kind == "fastapi" else None, "tags": []}


# -- choosing cells ---------------------------------------------------------------------------


def test_one_cell_per_line_the_newest_release_highest_starlette_lowest_python():
    cells = [
        cell("starlette", starlette="0.13.2"), cell("starlette", starlette="0.13.10"),
        cell("starlette", starlette="0.13.10", python="3.9"),
        cell("starlette", starlette="1.0.0", python="3.10"),
        cell("fastapi", "0.100.0", "0.27.0"), cell("fastapi", "0.100.1", "0.27.0"),
        cell("fastapi", "0.100.1", "0.28.0", in_range=False),  # outside its declared range
        cell("fastapi", "0.100.1", "0.27.0", python="3.11"),
        cell("fastapi", "0.99.1", "0.27.0"),
    ]
    chosen = fidelity.choose(cells)
    assert list(chosen) == ["starlette-0.13", "starlette-1.0", "fastapi-0.99", "fastapi-0.100"]
    assert chosen["starlette-0.13"]["id"] == "st-0.13.10_py3.8"  # 0.13.10 > 0.13.2
    assert chosen["fastapi-0.100"]["id"] == "fa-0.100.1_st-0.27.0_py3.8"


def test_the_plan_gives_one_cell_for_every_minor_line():
    cells = store.load_cells()
    chosen = fidelity.choose(cells)
    for project in ("starlette", "fastapi"):
        lines = {fidelity.line_of(project, v) for c in cells if c["kind"] == project
                 and (v := c[project])}
        assert lines == {k for k in chosen if k.startswith(project + "-")}


def test_an_unknown_line_is_one_line():
    chosen = fidelity.choose([cell("starlette", starlette="0.13.2")])
    assert fidelity.pick(chosen, ["starlette==0.13.2"]) == ["starlette-0.13"]
    with pytest.raises(UsageError) as caught:
        fidelity.pick(chosen, ["starlette==0.99"])
    assert "not a planned line" in str(caught.value) and "\n" not in str(caught.value)
    proc = subprocess.run([sys.executable, "-m", "bgmatrix", "fidelity", "fastapi==9.9"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- the sdist --------------------------------------------------------------------------------


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


SDIST = {
    "pyproject.toml": "[tool.pytest.ini_options]\n",
    "starlette/background.py": "raise SystemExit('the sdist copy must never be imported')\n",
    "tests/__init__.py": "",
    "tests/conftest.py": "import pytest\nfrom tests.helpers import thing\n",
    "tests/helpers.py": "import itsdangerous\n",
    "tests/test_background.py": "from starlette.background import BackgroundTask\n",
    "tests/middleware/test_gzip.py": "import trio\n",
    "tests/test_routing.py": "def test_x():\n    app.add_middleware(X)\n",
    "tests/test_other.py": "try:\n    import blockbuster\nexcept ImportError:\n"
                           "    pass\nimport yaml\nimport json\n",
    "docs/src/tutorial.py": "import jose\n",
    "docs_src/shop/__init__.py": "",
    "docs_src/shop/main.py": "from .db import Session\n",
    "docs_src/shop/db.py": "import sqlalchemy\n",
    "tests/test_tut.py": "from tutorial import app\nfrom shop.main import Session\n",
    "docs/index.md": "not extracted\n",
}


def test_only_tests_docs_src_and_config_are_extracted_never_the_package(tmp_path):
    fidelity.extract(make_sdist(tmp_path / "a.tar.gz", SDIST), tmp_path / "x")
    got = sorted(p.relative_to(tmp_path / "x").as_posix()
                 for p in (tmp_path / "x").rglob("*") if p.is_file())
    assert "starlette/background.py" not in got and "docs/index.md" not in got
    assert {"pyproject.toml", "tests/conftest.py", "docs/src/tutorial.py"} <= set(got)


def test_the_selection_rule_is_by_path_or_by_text(tmp_path):
    fidelity.extract(make_sdist(tmp_path / "a.tar.gz", SDIST), tmp_path / "x")
    assert fidelity.select_tests(tmp_path / "x") == [
        "tests/middleware/test_gzip.py", "tests/test_background.py", "tests/test_routing.py"]


def test_imports_follow_local_modules_and_leave_optional_and_stdlib_out(tmp_path):
    fidelity.extract(make_sdist(tmp_path / "a.tar.gz", SDIST), tmp_path / "x")
    root = tmp_path / "x"
    names = fidelity.test_imports(root, ["tests/test_background.py", "tests/test_other.py"])
    # conftest -> tests.helpers -> itsdangerous; the framework stays (its imports are checked
    # in the cell); blockbuster is optional, json is stdlib.
    assert names == {"itsdangerous", "pytest", "starlette.background", "yaml"}


def test_tutorial_code_is_local_and_relative_imports_resolve(tmp_path):
    fidelity.extract(make_sdist(tmp_path / "a.tar.gz", SDIST), tmp_path / "x")
    root = tmp_path / "x"
    # docs/src (old FastAPI) and docs_src are imported by bare name; shop.main's relative
    # import leads to shop/db.py and its sqlalchemy
    assert fidelity.test_imports(root, ["tests/test_tut.py"]) == {
        "jose", "sqlalchemy", "pytest", "itsdangerous"}  # (the last two: tests/conftest.py)
    assert fidelity.tutorial_dirs(root) == [root / "docs" / "src", root / "docs_src"]


def test_requirements_and_what_failures_say_is_missing():
    assert fidelity.requirements_for(["yaml", "tests"], {"anyio": "4.0"}, "3.8") == [
        "pytest>=5.4", "anyio[trio]", "pyyaml"]
    assert fidelity.requirements_for([], {}, "2.7") == ["pytest"]
    assert fidelity.needs_from([
        "ModuleNotFoundError: No module named 'trio'",
        'RuntimeError: Form data requires "python-multipart" to be installed.',
        "Failed: 'xdist_group' not found in `markers` configuration option",
        "ERROR: Unknown config option: timeout",
        "AssertionError: ujson must be installed to use UJSONResponse",
        "fixture 'event_loop' not found",
        "pytest: error: unrecognized arguments: --cov-report=term-missing:skip-covered",
        "assert 200 == 401",
    ]) == {"trio", "python-multipart", "pytest-xdist", "pytest-timeout", "ujson",
           "pytest-asyncio", "pytest-cov"}


# -- pytest's records -------------------------------------------------------------------------


def test_outcomes_and_counts_from_the_plugin_lines():
    lines = [json.dumps(r) for r in [
        {"test": "tests/a.py::ok", "when": "setup", "outcome": "passed", "reason": ""},
        {"test": "tests/a.py::ok", "when": "call", "outcome": "passed", "reason": ""},
        {"test": "tests/a.py::bad", "when": "call", "outcome": "failed",
         "reason": "assert 1 == 2"},
        {"test": "tests/a.py::setup_bad", "when": "setup", "outcome": "failed",
         "reason": "LookupError: No such backend: trio"},
        {"test": "tests/b.py::skip", "when": "setup", "outcome": "skipped",
         "reason": "needs 3.10"},
        {"test": "tests/c.py", "when": "collect", "outcome": "failed",
         "reason": "ModuleNotFoundError: No module named 'x'"},
    ]] + ["not json", json.dumps({"session": {"exitstatus": 1, "pytest": "8.3.5"}})]
    tests, session = fidelity.outcomes(lines)
    assert session == {"exitstatus": 1, "pytest": "8.3.5"}
    assert {t: v["outcome"] for t, v in tests.items()} == {
        "tests/a.py::ok": "passed", "tests/a.py::bad": "failed",
        "tests/a.py::setup_bad": "error", "tests/b.py::skip": "skipped",
        "tests/c.py": "error"}
    assert fidelity.counts(tests, ["tests/a.py", "tests/b.py", "tests/c.py", "tests/d.py"]) == {
        "tests/a.py": {"passed": 1, "failed": 1, "skipped": 0, "errors": 1},
        "tests/b.py": {"passed": 0, "failed": 0, "skipped": 1, "errors": 0},
        "tests/c.py": {"passed": 0, "failed": 0, "skipped": 0, "errors": 1},
        "tests/d.py": {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}}


def test_a_reason_is_one_line_without_run_folders_or_addresses(tmp_path):
    text = f"Error at {tmp_path}/x.py: <obj at 0x7f00deadbeef>\nsecond line"
    assert fidelity.one_line(text, tmp_path) == "Error at <run>/x.py: <obj>"


# -- the record -------------------------------------------------------------------------------


def entry(state="failures", failures=()):
    e = fidelity.blank("starlette-0.30", cell("starlette", starlette="0.30.0"))
    e.update(state=state, sdist="starlette-0.30.0.tar.gz", selected=["tests/a.py"],
             pytest="7.4.0", environment={"matches_result": True, "differences": {}},
             files={"tests/a.py": {"passed": 3, "failed": len(failures), "skipped": 0,
                                   "errors": 0}},
             totals={"passed": 3, "failed": len(failures), "skipped": 0, "errors": 0},
             failures=[{"test": t, "outcome": "failed", "reason": r} for t, r in failures])
    return e


KNOWN = (fidelity.Explanation(r"^starlette-", r"::test_perm", r"assert 200 == 401",
                              "runs as root: permissions do not stop root reading"),)


def test_the_record_is_deterministic_valid_and_explains_each_failure(tmp_path):
    measured = {"starlette-0.30": entry(failures=[("tests/a.py::test_perm", "assert 200 == 401"),
                                                  ("tests/a.py::test_new", "assert 1 == 2")])}
    data = fidelity.record(measured, known=KNOWN)
    path = tmp_path / "fidelity.json"
    assert fidelity.write(data, path) is True
    first = path.read_bytes()
    assert fidelity.write(fidelity.record(measured, known=KNOWN), path) is False
    assert path.read_bytes() == first  # a re-run that saw the same behaviour: no byte moves
    failures = data["lines"]["starlette-0.30"]["failures"]
    assert failures[0]["explanation"].startswith("runs as root")
    assert failures[1]["explanation"] is None  # a new reason is not explained by an old note
    assert fidelity.unexplained(data) == ["starlette-0.30: tests/a.py::test_new"]
    assert b"seconds" not in first and b"time" not in first


def test_lines_not_measured_are_kept_and_ordered_by_version():
    old = fidelity.record({"starlette-0.9": entry("no-tests"), "fastapi-0.100": entry("ok")})
    new = fidelity.record({"starlette-0.30": entry("ok")}, old)
    assert list(new["lines"]) == ["starlette-0.9", "starlette-0.30", "fastapi-0.100"]


def test_a_record_the_schema_refuses_is_never_written(tmp_path):
    data = fidelity.record({"starlette-0.30": entry()})
    data["lines"]["starlette-0.30"]["state"] = "fine"
    with pytest.raises(FidelityError):
        fidelity.write(data, tmp_path / "f.json")
    assert not (tmp_path / "f.json").exists()


@pytest.mark.parametrize("content", ["{not json", '{"format": 1}', "\xff"])
def test_a_corrupt_record_is_one_line_and_loses_nothing(tmp_path, content):
    path = tmp_path / "fidelity.json"
    path.write_text(content, encoding="latin-1")
    before = path.read_bytes()
    for load in (fidelity.load, site_fidelity.load):
        with pytest.raises(FidelityError) as caught:
            load(path)
        assert "\n" not in str(caught.value)
    proc = subprocess.run([sys.executable, "-m", "bgmatrix", "fidelity", "starlette==0.3",
                           "--out", str(path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert path.read_bytes() == before


# -- releases without an sdist or without tests: recorded states ------------------------------


def test_no_sdist_and_no_tests_are_recorded_states(tmp_path, monkeypatch):
    c = cell("starlette", starlette="0.3.7")
    monkeypatch.setattr(fidelity, "sdist_path", lambda project, version: None)
    got = fidelity.measure("starlette-0.3", c, tmp_path / "a")
    assert got["state"] == "no-sdist" and got["message"]
    bare = make_sdist(tmp_path / "b.tar.gz", {"starlette/__init__.py": "", "setup.py": ""})
    monkeypatch.setattr(fidelity, "sdist_path", lambda project, version: bare)
    got = fidelity.measure("starlette-0.3", c, tmp_path / "b")
    assert got["state"] == "no-tests" and "no tests/" in got["message"]
    assert fidelity.record({"starlette-0.3": got})["lines"]["starlette-0.3"]["state"] == (
        "no-tests")


def test_a_download_that_fails_is_a_recorded_error_not_a_crash(tmp_path, monkeypatch):
    def broken(project, version):
        raise fidelity.FidelityError("package index could not be reached")

    monkeypatch.setattr(fidelity, "sdist_path", broken)
    got = fidelity.measure("starlette-0.3", cell("starlette", starlette="0.3.7"), tmp_path)
    assert got["state"] == "error" and "could not be reached" in got["message"]


# -- the site ---------------------------------------------------------------------------------


def test_the_page_lists_each_line_its_counts_and_the_explanations():
    data = fidelity.record({"starlette-0.30": entry(failures=[
        ("tests/a.py::test_perm", "assert 200 == 401")]), "starlette-0.9": entry("no-tests")},
        known=KNOWN)
    text = site_fidelity.page(data, cells={"st-0.30.0_py3.8"})
    assert text.startswith(f"# {site_fidelity.TITLE}")
    assert ("(cells/st-0.30.0_py3.8.md) | failures | 3 | 1 | 0 | 0 | 7.4.0 | same as its "
            "result |") in text
    assert "runs as root" in text and "the source distribution ships no tests" in text
    assert "1 failure on 1 line: not the cell's packages" in text
    assert f"{esc('starlette-0.30')} (1)" in text
    # A cell the snapshot has no page for is named, never linked (mkdocs --strict refuses it).
    alone = site_fidelity.page(data, cells=())
    assert "cells/st-0.30.0_py3.8.md" not in alone and "st-0.30.0_py3.8" in html.unescape(alone)


def test_a_failure_the_cell_causes_says_so():
    known = (fidelity.Explanation(r"^starlette-", r"::test_old", r"", "anyio 4 in the cell",
                                  environment_problem=True),)
    data = fidelity.record({"starlette-0.30": entry(failures=[
        ("tests/a.py::test_old", "warning")])}, known=known)
    assert "1 failure on 1 line: the cell differs from the release's CI" in \
        site_fidelity.page(data)


def test_an_unexplained_failure_is_listed_on_its_own():
    data = fidelity.record({"starlette-0.30": entry(failures=[
        ("tests/a.py::test_new", "assert 1 == 2")])}, known=KNOWN)
    text = site_fidelity.page(data)
    assert "1 not yet explained" in text and "(1 not yet explained)" in text
    assert "assert 1 == 2" in text
    assert "Not measured yet" in site_fidelity.page(None)


# -- tests from the release's tag ---------------------------------------------------------------


def _git(repo: Path, *argv: str) -> None:
    subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "PATH": "/usr/bin:/bin",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "HOME": "/"})


def test_a_release_without_tests_in_its_sdist_gets_them_from_its_tag(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "starlette").mkdir()
    (repo / "tests" / "test_background.py").write_text("def test_x():\n    pass\n")
    (repo / "starlette" / "__init__.py").write_text("")  # the package: never extracted
    (repo / "setup.cfg").write_text("[tool:pytest]\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "0.13.8")
    _git(repo, "tag", "0.13.8")
    archive, source = fidelity.git_tests(repo, "starlette", "0.13.8", tmp_path / "cache")
    assert source["git_tag"] == "0.13.8" and len(source["commit"]) == 40
    fidelity.extract(archive, tmp_path / "out")
    assert fidelity.select_tests(tmp_path / "out") == ["tests/test_background.py"]
    assert (tmp_path / "out" / "setup.cfg").exists()
    assert not (tmp_path / "out" / "starlette").exists()
    with pytest.raises(FidelityError, match="has no tag 0.13.9"):
        fidelity.git_tests(repo, "starlette", "0.13.9", tmp_path / "cache")
    data = fidelity.record({"starlette-0.13": {**entry(), "tests_from": source}}, known=KNOWN)
    assert fidelity.schemas.problem(data, "fidelity") is None
    assert "tests from tag 0.13.8" in site_fidelity.page(data)


@pytest.mark.parametrize("value", ["starlette", "flask=/tmp", "starlette=/nonexistent/x"])
def test_a_bad_git_option_is_one_line(value, capsys):
    from bgmatrix.cli import main

    assert main(["fidelity", "--git", value, "starlette==0.13"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--git" in err


def test_the_home_line_counts_lines_and_says_what_is_left():
    assert site_fidelity.home_line(None) == ""
    data = fidelity.record({"starlette-0.30": entry(failures=[
        ("tests/a.py::test_perm", "assert 200 == 401"), ("tests/a.py::test_new", "assert 0")]),
        "starlette-0.9": entry("no-tests")}, known=KNOWN)
    line = site_fidelity.home_line(data)
    assert "1 of 2 minor lines" in line and "2 failed or errored, 1 not yet explained" in line
    assert "(fidelity.md)" in line


def test_the_home_page_says_how_far_the_evidence_holds():
    from bgmatrix.site import pages

    committed = site_fidelity.load()
    if committed is None:
        pytest.skip("no matrix/fidelity.json committed")
    assert site_fidelity.home_line(committed) in "\n".join(
        pages.trust_lines(_EmptySnapshot()))


class _EmptySnapshot:
    """What trust_lines reads of a snapshot: no disagreements, no probes."""
    disagreements: dict = {}
    probes = None
