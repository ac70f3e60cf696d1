"""bgmatrix.run.upstream's pure parts: the patch's added lines, the coverage of those lines,
and the split between what the source distribution ships and what only the repository has."""

from __future__ import annotations

import json

import pytest

from bgmatrix import schemas
from bgmatrix.run import candidates, upstream

# Blank context lines are written empty (as some editors leave them), not as one space.
# fastapi/mod.py's diff stands in both patches below.
MOD_DIFF = """\
--- a/fastapi/mod.py
+++ b/fastapi/mod.py
@@ -1,4 +1,5 @@
 import a
-import b
+import c
+import d

 x = 1
@@ -10,3 +11,5 @@ def f():
     return 1
+
+# a comment

\\ No newline at end of file
"""

GIT_DIFF = """\
Some words before the first file are not part of any file.

diff --git a/docs/page.md b/docs/page.md
index 1111111..2222222 100644
--- a/docs/page.md
+++ b/docs/page.md
@@ -2,3 +2,4 @@ heading
 one
+new line
 two
 three
diff --git a/fastapi/mod.py b/fastapi/mod.py
""" + MOD_DIFF + """\
diff --git a/tests/test_new.py b/tests/test_new.py
new file mode 100644
--- /dev/null
+++ b/tests/test_new.py
@@ -0,0 +1,2 @@
+def test():
+    assert True
"""

PLAIN_DIFF = """\
# a header comment, as candidates/*.patch have

""" + MOD_DIFF + """\
--- a/fastapi/other.py
+++ b/fastapi/other.py
@@ -5 +5 @@
-old
+new
"""


def test_split_patch_finds_each_file_and_new_files():
    diffs = upstream.split_patch(GIT_DIFF)
    assert [d.path for d in diffs] == ["docs/page.md", "fastapi/mod.py", "tests/test_new.py"]
    assert [d.new_file for d in diffs] == [False, False, True]
    assert diffs[0].text.startswith("diff --git a/docs/page.md")
    assert "Some words" not in "".join(d.text for d in diffs)
    assert [d.path for d in upstream.split_patch(PLAIN_DIFF)] == [
        "fastapi/mod.py", "fastapi/other.py"]


def test_added_lines_are_new_file_line_numbers():
    assert upstream.added_lines(GIT_DIFF) == {
        "docs/page.md": [3],
        "fastapi/mod.py": [2, 3, 12, 13],
        "tests/test_new.py": [1, 2],
    }
    assert upstream.added_lines(PLAIN_DIFF) == {"fastapi/mod.py": [2, 3, 12, 13],
                                                 "fastapi/other.py": [5]}


def test_routing_matches_compares_only_the_fastapi_hunks():
    git_code = "".join(d.text for d in upstream.split_patch(GIT_DIFF)
                       if d.path == "fastapi/mod.py")
    plain_mod = PLAIN_DIFF[:PLAIN_DIFF.index("--- a/fastapi/other.py")]
    assert upstream.routing_matches(GIT_DIFF, plain_mod)
    assert not upstream.routing_matches(GIT_DIFF, PLAIN_DIFF)  # other.py is extra
    assert not upstream.routing_matches(GIT_DIFF, git_code.replace("+import d", "+import e"))
    assert not upstream.routing_matches("", "")  # no code change is no match


def _report(files):
    return {"files": files, "totals": {"percent_covered": 90.0}}


def test_coverage_counts_added_statements_only():
    report = _report({
        "fastapi/mod.py": {"executed_lines": [1, 2, 5, 12], "missing_lines": [3],
                           "excluded_lines": [13], "summary": {"percent_covered": 80.0}},
    })
    found = upstream.coverage_of_added(upstream.added_lines(GIT_DIFF), report)
    mod = found["files"]["fastapi/mod.py"]
    assert mod == {"added": [2, 3, 12, 13], "statements": [2, 3, 12], "covered": [2, 12],
                   "missing": [3], "excluded": [13], "in_report": True}
    # docs/ and tests/ are outside the measured prefix
    assert list(found["files"]) == ["fastapi/mod.py"]
    assert (found["added_lines"], found["added_statements"], found["covered_statements"]) == (
        4, 3, 2)
    assert found["percent"] == 66.67


def test_coverage_of_a_file_missing_from_the_report_is_zero():
    found = upstream.coverage_of_added({"fastapi/gone.py": [1, 2]}, _report({}))
    assert found["files"]["fastapi/gone.py"]["missing"] == [1, 2]
    assert found["files"]["fastapi/gone.py"]["in_report"] is False
    assert found["percent"] == 0.0


def test_coverage_when_every_added_statement_ran():
    report = _report({"fastapi/other.py": {"executed_lines": [5], "missing_lines": [9]}})
    found = upstream.coverage_of_added(upstream.added_lines(PLAIN_DIFF), report)
    assert found["files"]["fastapi/other.py"]["covered"] == [5]
    assert found["files"]["fastapi/mod.py"]["missing"] == [2, 3, 12, 13]
    only_other = upstream.coverage_of_added({"fastapi/other.py": [5]}, report)
    assert only_other["percent"] == 100.0
    assert upstream.coverage_of_added({}, report)["percent"] == 100.0  # nothing to cover


def test_file_coverage_reports_coverage_percent_or_none():
    report = _report({"tests/test_new.py": {"summary": {"percent_covered": 100.0}}})
    assert upstream.file_coverage(report, ["tests/test_new.py", "tests/absent.py"]) == {
        "tests/absent.py": None, "tests/test_new.py": 100.0}


def test_for_sdist_sends_files_the_sdist_lacks_to_the_repository(tmp_path):
    (tmp_path / "fastapi").mkdir()
    (tmp_path / "fastapi" / "mod.py").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "docs").mkdir()  # shipped folder, but not the page
    where = {d.path: upstream.for_sdist(d, tmp_path) for d in upstream.split_patch(GIT_DIFF)}
    assert where == {"docs/page.md": False, "fastapi/mod.py": True, "tests/test_new.py": True}


def test_failures_blame_the_patch_only_for_tests_failing_alone_and_passing_without_it():
    with_patch = candidates.SuiteRun(1, {"t::a": "failed", "t::b": "errored", "t::c": "passed",
                                         "t::new": "failed", "t::slow": "failed"},
                                     {"t::a": "boom"})
    rerun = candidates.SuiteRun(1, {"t::a": "failed", "t::b": "errored", "t::new": "failed",
                                    "t::slow": "passed"}, {})
    without = candidates.SuiteRun(1, {"t::a": "failed", "t::b": "passed", "t::slow": "passed"},
                                  {})
    found = upstream.failures(with_patch, rerun, without)
    assert [(f["test"], f["without_patch"], f["flaky"], f["caused_by_patch"]) for f in found] == [
        ("t::a", "failed", False, False), ("t::b", "passed", False, True),
        ("t::new", "absent", False, True), ("t::slow", "passed", True, False)]
    assert found[0]["message"] == "boom"
    unchecked = upstream.failures(with_patch, None, None)[0]
    assert (unchecked["on_rerun_with_patch"], unchecked["caused_by_patch"]) == ("not run", True)


def test_committed_pr_patch_carries_the_recommended_code():
    pr = upstream.PR_PATCH.read_text(encoding="utf-8")
    recommended = (candidates.CANDIDATES_DIR / "recommended.patch").read_text(encoding="utf-8")
    assert upstream.routing_matches(pr, recommended)
    assert upstream.added_lines(pr)["fastapi/routing.py"] == upstream.added_lines(
        recommended)["fastapi/routing.py"]


def test_committed_check_record_is_valid():
    if not upstream.CHECK_PATH.is_file():
        pytest.skip("no check record yet")
    record = json.loads(upstream.CHECK_PATH.read_text(encoding="utf-8"))
    assert schemas.problem(record, "upstream") is None
    assert "upstream" in schemas.__doc__
