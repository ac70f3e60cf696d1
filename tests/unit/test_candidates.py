"""Candidate patches and their runner: headers, clean application, builds, bad targets.

spec/resolution.md grades the candidates; these tests only check the machinery that builds
and runs them.  Tests that need the FastAPI source distribution use the cached copy and skip
without it, except the ``live`` ones, which download it.
"""

import hashlib
import json
import subprocess
import sys
import zipfile

import pytest

from bgmatrix import results
from bgmatrix.run import candidates, runner
from bgmatrix.spec import ROOT

EXPECTED = ["copy-on-send", "merge-fastapi-tasks", "merge-injected-first-in-place",
            "merge-response-first", "pr-15357", "recommended", "recommended-in-place", "warn",
            "warn-on-loss"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bgmatrix", "candidates", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def base():
    return candidates.base_release()


@pytest.fixture
def cached_sdist(base):
    """The base release's sdist, downloaded once (CI reaches the package index)."""
    try:
        return candidates.sdist(base.fastapi)
    except candidates.CandidateError as exc:
        pytest.skip(f"FastAPI {base.fastapi} source distribution not available: {exc}")


def test_the_candidates_are_there():
    assert candidates.names() == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_patch_opens_with_a_header_saying_what_it_stands_for(name):
    head = candidates.header(candidates.patch_path(name))
    assert head.startswith(f"# Candidate: {name} "), head[:80]
    assert "What it changes" in head
    assert all(line.startswith("#") for line in head.splitlines() if line)
    text = candidates.patch_path(name).read_text()
    # A unified diff against the release's own layout, applied with -p1.
    assert "\n--- a/fastapi/routing.py\n+++ b/fastapi/routing.py\n" in text


def test_the_base_release_is_the_newest_planned(base):
    assert base.python == "3.11"
    assert base.cutoff and base.fastapi and base.starlette


@pytest.mark.parametrize("name", EXPECTED)
def test_patches_apply_cleanly_to_the_cached_sdist(name, cached_sdist, tmp_path):
    tree = candidates.unpack(cached_sdist, tmp_path / "src")
    candidates.apply_patch(tree, candidates.patch_path(name))
    source = (tree / "fastapi" / "routing.py").read_text()
    compile(source, "routing.py", "exec")  # a patch that applies but breaks syntax fails here
    if name == "recommended":
        # The recommended rule warns about nothing and goes through one helper everywhere.
        assert source.count("_with_injected_background(") == 3
        assert "response.background = " not in source


def test_a_patch_that_does_not_apply_is_one_line(cached_sdist, tmp_path):
    tree = candidates.unpack(cached_sdist, tmp_path / "src")
    patch = candidates.patch_path("warn")
    candidates.apply_patch(tree, patch)
    with pytest.raises(candidates.CandidateError, match="does not apply") as err:
        candidates.apply_patch(tree, patch)  # --forward: applying twice is an error
    assert "\n" not in str(err.value)


@pytest.mark.live
def test_build_downloads_the_sdist_and_builds_a_patched_wheel():
    wheel = candidates.build("recommended")
    assert wheel.name.startswith("fastapi-") and wheel.suffix == ".whl"
    with zipfile.ZipFile(wheel) as zf:
        assert b"_with_injected_background" in zf.read("fastapi/routing.py")
    assert candidates.build("recommended") == wheel  # cached by content


def _with_build(result, c):
    """What ``candidates.run`` does: the runner keeps the common fields, run adds the build."""
    result["cell"]["build"] = c["build"]
    return result


def test_candidate_cells_fit_the_result_schema(base, cached_sdist, tmp_path):
    patch = candidates.patch_path("recommended")
    build = candidates.Build("recommended", tmp_path / "x.whl", base.fastapi, True, patch)
    c = candidates.candidate_cell(build, base)
    assert c["id"] == "candidate-recommended_py3.11"
    assert (c["kind"], c["candidate"], c["fastapi"]) == ("candidate", "recommended", base.fastapi)
    assert c["cutoff"] == base.cutoff
    provenance = {"spec_version": "0", "suite_hash": "0", "tools": {}}
    results.validate(_with_build(runner.result_for(c, "install-error", "why", provenance), c),
                     "candidate")
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"not really a wheel")
    foreign = candidates.candidate_cell(
        candidates.Build("fastapi@my branch", wheel, "0.200.0", False), base)
    assert foreign["id"] == "candidate-fastapi-my-branch_py3.11"
    assert foreign["cutoff"] is None
    results.validate(_with_build(runner.result_for(foreign, "install-error", "why",
                                                   provenance), foreign), "candidate")


def test_a_candidate_records_the_exact_inputs_it_was_built_from(base, cached_sdist, tmp_path):
    patch = candidates.patch_path("warn")
    patched = candidates.Build("warn", tmp_path / "absent.whl", base.fastapi, True, patch)
    # A patch build is named by its two inputs; its wheel need not even exist any more.
    assert candidates.build_record(patched, base) == {
        "base_sdist_sha256": hashlib.sha256(cached_sdist.read_bytes()).hexdigest(),
        "patch_sha256": hashlib.sha256(patch.read_bytes()).hexdigest(),
    }
    wheel = tmp_path / "fastapi-0.200.0-py3-none-any.whl"
    wheel.write_bytes(b"some wheel")
    other = candidates.Build(wheel.stem, wheel, "0.200.0", False)
    assert candidates.build_record(other, base) == {
        "wheel_sha256": hashlib.sha256(b"some wheel").hexdigest()}
    # The schema takes exactly one of the two shapes, each digest a full lowercase sha256.
    provenance = {"spec_version": "0", "suite_hash": "0", "tools": {}}
    c = candidates.candidate_cell(other, base)
    for bad in ({"wheel_sha256": "ABC"}, {"patch_sha256": "0" * 64},
                {**c["build"], "patch_sha256": "0" * 64}, {}):
        with pytest.raises(results.ResultError):
            results.validate(_with_build(runner.result_for(
                {**c, "build": bad}, "install-error", "why", provenance), {"build": bad}),
                "candidate")


def test_resolve_keeps_the_patch_of_a_candidate_and_of_a_patch_file(base, monkeypatch,
                                                                    tmp_path):
    monkeypatch.setattr(candidates, "patched_wheel", lambda patch, base, label: tmp_path)
    assert candidates.resolve("warn", base).patch == candidates.patch_path("warn")
    mine = tmp_path / "mine.patch"
    mine.write_text("# Candidate: mine\n")
    assert candidates.resolve(str(mine), base).patch == mine.resolve()


# -- bad targets: one line on stderr, exit 2, nothing written ----------------------------------


def _fake_wheel(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name in members:
            zf.writestr(name, "")
    return path


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda d: str(d / "no" / "such" / "build"), "no such file or directory"),
        (lambda d: "no-such-candidate", "unknown candidate 'no-such-candidate'"),
        (lambda d: str(d), "not a FastAPI source tree"),
        (lambda d: str(_touch(d / "notes.txt")), "not a FastAPI build"),
        (lambda d: str(_fake_wheel(d / "requests-2.0-py3-none-any.whl", ["requests/x.py"])),
         "a wheel of requests, not of FastAPI"),
        (lambda d: str(_fake_wheel(d / "fastapi-1.0-py3-none-any.whl", ["other/x.py"])),
         "no fastapi/__init__.py inside"),
        (lambda d: str(_touch(d / "fastapi-1.0.tar.gz")), "not a readable source distribution"),
        (lambda d: str(_tree(d, "starlette")), "builds starlette, not FastAPI"),
        (lambda d: "git+file://" + str(d / "no-repo"), "git clone failed"),
    ],
    ids=["missing", "unknown-name", "empty-dir", "text-file", "other-wheel", "hollow-wheel",
         "bad-sdist", "other-project", "bad-vcs"],
)
def test_a_bad_target_is_one_line_and_exit_2(make, says, tmp_path):
    # Only candidate files: a sweep may be writing release results meanwhile.
    before = _candidate_results()
    out = tmp_path / "out"
    proc = run_cli(make(_mkdir(tmp_path / "in")), "--results", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert _candidate_results() == before


def _candidate_results():
    return {p.name: p.stat().st_mtime_ns for p in (ROOT / "results").glob("candidate-*.json")}


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def _touch(path):
    path.write_text("not an archive")
    return path


def _tree(folder, project):
    (folder / "fastapi").mkdir()
    (folder / "fastapi" / "__init__.py").write_text("")
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{project}"\n')
    return folder


@pytest.mark.parametrize(
    "url, expected",
    [
        ("git+https://example.org/org/fastapi.git", ("https://example.org/org/fastapi.git", None)),
        ("git+https://example.org/org/fastapi.git@fix-11215",
         ("https://example.org/org/fastapi.git", "fix-11215")),
        ("git+ssh://git@example.org/org/fastapi.git", ("ssh://git@example.org/org/fastapi.git",
                                                       None)),
        ("git+ssh://git@example.org/org/fastapi.git@v1#egg=fastapi",
         ("ssh://git@example.org/org/fastapi.git", "v1")),
    ],
)
def test_vcs_urls_split_into_clone_url_and_ref(url, expected):
    assert candidates.split_vcs_url(url) == expected


# -- FastAPI's own suite: outcomes and comparison -----------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
 <testcase classname="tests.test_a" name="test_ok"/>
 <testcase classname="tests.test_a" name="test_broken_before"><failure message="boom at 0x7f3a">
 </failure></testcase>
 <testcase classname="tests.test_a" name="test_changed"/>
 <testcase classname="tests.test_b" name="test_skip"><skipped message="no db"/></testcase>
 <testcase classname="tests.test_b" name="test_teardown"/>
 <testcase classname="tests.test_b" name="test_teardown"><error message="teardown"/></testcase>
</testsuite></testsuites>
"""


def test_junit_outcomes_keep_the_worst_and_mask_addresses(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT)
    outcomes, messages = candidates.junit_outcomes(path)
    assert outcomes == {
        "tests.test_a::test_ok": "passed",
        "tests.test_a::test_broken_before": "failed",
        "tests.test_a::test_changed": "passed",
        "tests.test_b::test_skip": "skipped",
        "tests.test_b::test_teardown": "errored",
    }
    assert messages["tests.test_a::test_broken_before"] == "boom at 0x…"


def test_a_failure_the_release_already_has_is_not_blamed_on_the_patch():
    without = candidates.SuiteRun(1, {"t::old": "failed", "t::new": "passed", "t::ok": "passed"},
                                  {})
    with_patch = candidates.SuiteRun(1, {"t::old": "failed", "t::new": "failed",
                                         "t::ok": "passed"}, {"t::new": "AssertionError"})
    report = candidates.compare(without, with_patch)
    assert report["new_failures"] == ["t::new"]
    assert report["failing_without_patch_too"] == ["t::old"]
    assert report["changed"] == [{"test": "t::new", "without_patch": "passed",
                                  "with_patch": "failed", "message": "AssertionError"}]
    assert report["counts"] == {"errored": 0, "failed": 2, "skipped": 0, "passed": 1,
                                "total": 3}


def test_the_regression_file_is_deterministic_and_keeps_earlier_candidates(tmp_path):
    counts = {"passed": 1, "failed": 0, "errored": 0, "skipped": 0, "total": 1}

    def run(n):
        return {"counts": dict(counts, passed=n), "new_failures": [], "changed": [],
                "pytest_exit_code": 0}

    def report(runs):  # a record as schema/regression.schema.json describes it
        return {"about": "FastAPI's own suite", "commands": {}, "deselected": {},
                "base": {"fastapi": "1", "starlette": "1", "python": "3.11", "cutoff": None},
                "environment": {"packages": {}, "python": "3.11.7"},
                "without_patch": {"counts": counts, "failing": [], "pytest_exit_code": 0},
                "with_patch": runs}

    path = tmp_path / "regression.json"
    candidates.write_regression(report({"warn": run(1)}), path)
    candidates.write_regression(report({"recommended": run(2)}), path)
    first = path.read_bytes()
    assert list(json.loads(first)["with_patch"]) == ["recommended", "warn"]
    candidates.write_regression(report({"recommended": run(2)}), path)
    assert path.read_bytes() == first
    # Measured against another baseline, earlier runs are not comparable: they are dropped.
    changed = report({"warn": run(3)})
    changed["base"] = dict(changed["base"], fastapi="2")
    candidates.write_regression(changed, path)
    assert list(json.loads(path.read_text())["with_patch"]) == ["warn"]
    # A record the site would refuse is never written.
    broken = report({"warn": {"n": 4}})
    with pytest.raises(candidates.CandidateError, match="regression record: with_patch/warn"):
        candidates.write_regression(broken, path)
    assert list(json.loads(path.read_text())["with_patch"]) == ["warn"]


def test_describe_names_every_requirement(base):
    ids = candidates.requirement_ids()
    assert ids[0] == "ATTACH-3" and {"EXEC-7", "ISO-1", "RES-2"} <= set(ids)
    result = {"cell": {"id": "candidate-x_py3.11", "candidate": "x", "fastapi": base.fastapi,
                       "starlette": base.starlette, "python": "3.11"},
              "state": "ok", "message": None, "provenance": {},
              "clauses": {"ATTACH-3": {"verdict": "conforms", "label": "merge", "tests": []}}}
    text = candidates.describe(result)
    for cid in ids:
        assert cid in text
    assert "ATTACH-3  conforms      merge" in text


def test_a_failure_that_passes_when_run_again_alone_is_flaky_not_new():
    without = candidates.SuiteRun(0, {"t::slow": "passed", "t::real": "passed"}, {})
    with_patch = candidates.SuiteRun(1, {"t::slow": "failed", "t::real": "failed"}, {})
    assert candidates.newly_failing(without, with_patch) == ["t::real", "t::slow"]
    rerun = candidates.SuiteRun(1, {"t::slow": "passed", "t::real": "failed"}, {})
    report = candidates.compare(without, with_patch, rerun)
    assert report["new_failures"] == ["t::real"]
    assert report["flaky"] == ["t::slow"]
    assert [c["on_rerun"] for c in report["changed"]] == ["failed", "passed"]


def test_junit_names_map_back_to_node_ids(tmp_path):
    (tmp_path / "tests" / "sub").mkdir(parents=True)
    (tmp_path / "tests" / "sub" / "test_x.py").write_text("")
    assert candidates.node_id(tmp_path, "tests.sub.test_x::test_a[p-1]") == \
        "tests/sub/test_x.py::test_a[p-1]"
    assert candidates.node_id(tmp_path, "tests.sub.test_x.TestK::test_b") == \
        "tests/sub/test_x.py::TestK::test_b"


@pytest.mark.parametrize("has_filter", [True, False])
def test_an_sdist_with_a_link_or_an_escaping_path_is_refused(tmp_path, monkeypatch, has_filter):
    import io
    import tarfile

    if not has_filter:  # Python < 3.11.4 (Debian 12's 3.11.2): the fallback check
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        info = tarfile.TarInfo("pkg-1.0/setup.py")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"x=1"))
    assert candidates.unpack(good, tmp_path / "out").name == "pkg-1.0"
    for name, kind in (("../escape.py", tarfile.REGTYPE), ("pkg-1.0/link", tarfile.SYMTYPE)):
        bad = tmp_path / "bad.tar.gz"
        with tarfile.open(bad, "w:gz") as tf:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tf.addfile(info, io.BytesIO(b""))
        with pytest.raises(candidates.CandidateError, match="not a readable source"):
            candidates.unpack(bad, tmp_path / "out2")
        assert not (tmp_path / "escape.py").exists()
