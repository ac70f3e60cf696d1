"""`bgmatrix compat`: the pure parts (records to table, changed-vs-base, Markdown, merging with
an earlier file) and the guarantee that tests/compat runs only through the runner."""

import ast
import json
import os
import subprocess
import sys

import pytest

from bgmatrix import cli, schemas
from bgmatrix.run import compat
from bgmatrix.run.candidates import Base, CandidateError
from bgmatrix.run.env import CellError
from bgmatrix.spec import ROOT

BASE = Base(fastapi="0.165.0", starlette="1.10.0", python="3.11", cutoff="2026-11-01T00:00:00Z",
            in_declared_range=True)


def records(**labels):
    """A build's records: every row labelled ``same`` unless named (row ids use _ for -)."""
    found = {row: {"label": "same", "facts": {"row": row}} for row in compat.ROWS}
    for key, label in labels.items():
        found[key.replace("_", "-")]["label"] = label
    return found


def test_every_row_the_apps_record_is_a_row_of_the_table_and_back():
    tree = ast.parse((ROOT / "tests" / "compat" / "test_compat.py").read_text(encoding="utf-8"))
    recorded = [call.args[0].value for call in ast.walk(tree)
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "record" and call.args
                and isinstance(call.args[0], ast.Constant)]
    assert sorted(recorded) == sorted(compat.ROWS)


def test_changed_compares_each_label_with_the_base_release():
    rows = compat.table({
        "base": records(),
        "merge": records(workaround_copy="runs-twice", dependency_tasks="dep-task-runs"),
        "noop": records(),
    })
    assert list(rows) == list(compat.ROWS)  # table order
    copy = rows["workaround-copy"]["cells"]
    assert copy["base"] == {"label": "same", "changed": False,
                            "facts": {"row": "workaround-copy"}}
    assert copy["merge"]["changed"] is True and copy["merge"]["label"] == "runs-twice"
    assert copy["noop"]["changed"] is False
    assert rows["dependency-tasks"]["cells"]["merge"]["changed"] is True
    assert rows["workaround-wrap"]["cells"]["merge"]["changed"] is False
    assert all(r["description"] == compat.ROWS[name] for name, r in rows.items())


def test_an_unmeasured_column_says_why_and_is_never_changed():
    rows = compat.table({"base": records(), "broken": "build failed: does not apply"})
    cell = rows["warnings-as-errors"]["cells"]["broken"]
    assert cell == {"label": compat.NOT_MEASURED, "changed": False,
                    "facts": {"error": "build failed: does not apply"}}


def test_without_the_base_release_there_is_no_table():
    with pytest.raises(CandidateError, match="base release was not measured"):
        compat.table({"base": "install-error: no network", "merge": records()})


def test_the_report_is_schema_valid_sorted_and_written_byte_for_byte_again(tmp_path):
    data = compat.report(BASE, {"warn": records(clear_escape_hatch="x + UserWarning"),
                                "base": records()}, {"base": {"packages": {"anyio": "4"}}})
    assert data["columns"] == ["base", "warn"]
    assert schemas.problem(data, "compat") is None
    path = tmp_path / "compat.json"
    compat.write(data, path)
    first = path.read_bytes()
    compat.write(json.loads(first), path)
    assert path.read_bytes() == first
    assert json.loads(first) == data


def test_a_record_the_schema_refuses_is_never_written(tmp_path):
    data = compat.report(BASE, {"base": records()}, {})
    data["rows"]["workaround-copy"]["cells"]["base"]["changed"] = "no"
    path = tmp_path / "compat.json"
    with pytest.raises(CandidateError, match="changed"):
        compat.write(data, path)
    assert not path.exists()


def test_markdown_shows_the_base_label_then_unchanged_or_the_new_label_marked():
    data = compat.report(BASE, {"base": records(workaround_copy="runs-once"),
                                "merge": records(workaround_copy="runs-twice"),
                                "pipe": records(workaround_copy="a|b"),
                                "broken": "install-error: offline"}, {})
    lines = compat.markdown(data).splitlines()
    assert lines[0] == "| row | 0.165.0 (base) | broken | merge | pipe |"
    assert lines[1] == "| --- | --- | --- | --- | --- |"
    copy = next(line for line in lines if line.startswith("| workaround-copy |"))
    assert copy == "| workaround-copy | runs-once | not-measured | runs-twice ⚠ | a\\|b ⚠ |"
    wrap = next(line for line in lines if line.startswith("| workaround-wrap |"))
    assert wrap == "| workaround-wrap | same | not-measured | unchanged | unchanged |"
    assert len(lines) == 2 + len(compat.ROWS)


def test_parse_records_reads_every_row_and_refuses_a_broken_harness():
    def line(row, outcome="observed", error=None):
        return json.dumps({"test": f"t::{row}", "row": row, "label": "L", "facts": {},
                           "outcome": outcome, "error": error})

    every = [line(r) for r in compat.ROWS]
    assert compat.parse_records(every, 0, "") == {r: {"label": "L", "facts": {}}
                                                  for r in compat.ROWS}
    with pytest.raises(CellError, match="missing rows workaround-copy"):
        compat.parse_records(every[1:], 0, "")
    with pytest.raises(CellError, match="pytest exited 1"):
        compat.parse_records(every, 1, "E   boom")
    with pytest.raises(CellError, match="KeyError: 'x'"):
        compat.parse_records(every[:1] + [line("workaround-wrap", "harness-error",
                                                "KeyError: 'x'")], 1, "")
    with pytest.raises(CellError, match="unknown row 'other'"):
        compat.parse_records(every + [line("other")], 0, "")


def test_an_earlier_file_keeps_the_columns_not_rerun_when_the_baseline_is_the_same():
    old = compat.report(BASE, {"base": records(), "warn": records(workaround_copy="w"),
                               "gone": records()}, {"warn": {"packages": {}}})
    new = compat.report(BASE, {"base": records(), "merge": records()}, {})
    merged = compat.merge_kept(json.loads(json.dumps(new)), old, ["merge", "warn"])
    assert merged["columns"] == ["base", "merge", "warn"]  # "gone" has no patch any more
    assert merged["rows"]["workaround-copy"]["cells"]["warn"]["label"] == "w"
    assert merged["environments"] == {"warn": {"packages": {}}}
    assert schemas.problem(merged, "compat") is None

    other_base = compat.report(BASE, {"base": records(dependency_tasks="dep-task-runs"),
                                      "merge": records()}, {})
    assert compat.merge_kept(json.loads(json.dumps(other_base)), old, ["merge", "warn"]) \
        == other_base


def test_the_host_never_collects_the_compat_apps():
    """tests/compat imports FastAPI, which the host lacks: only the runner (which sets
    BGMATRIX_COMPAT=1 inside a cell) collects it, and `nox -s tests` runs tests/unit only."""
    env = {k: v for k, v in os.environ.items() if k != "BGMATRIX_COMPAT"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", "tests/compat"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stdout + proc.stderr  # 5: no tests collected
    assert "error" not in (proc.stdout + proc.stderr).lower()


def test_an_unknown_candidate_is_one_line_before_anything_is_built(capsys):
    assert cli.main(["compat", "no-such-candidate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgmatrix compat: unknown candidate 'no-such-candidate'")
    assert len(err.strip().splitlines()) == 1
