"""Result files: schema, atomic writes, and one-line errors for every kind of bad file."""

import json

import pytest

from bgmatrix import results, spec
from bgmatrix.run import runner


def sample(cell_id="fa-1.0.0_st-1.0.0_py3.11", state="ok"):
    c = {"id": cell_id, "kind": "fastapi", "fastapi": "1.0.0", "starlette": "1.0.0",
         "python": "3.11", "cutoff": "2026-01-01T00:00:00Z", "in_declared_range": True}
    record = {
        "test": "tests/spec/test_attachment.py::test_x", "clauses": ["ATTACH-3"],
        "outcome": "ok", "error": None, "observations": {"request": {"effects": ["own"]}},
        "verdicts": {"ATTACH-3": {"verdict": "deviates", "label": "drop", "expected": "merge"}},
    }
    prov = {"spec_version": "0.1.0", "suite_hash": "abc", "tools": {}, "started": "s",
            "finished": "f"}
    return runner.result_for(c, state, None, prov, [record])


def test_a_built_result_validates_and_round_trips(tmp_path):
    data = sample()
    path = tmp_path / f"{data['cell']['id']}.json"
    results.write(path, data)
    assert results.load(path) == data
    assert data["clauses"]["ATTACH-3"]["verdict"] == "deviates"
    # a clause whose test did not run is a harness error, never a quiet n/a
    assert data["clauses"]["COLLECT-1"]["verdict"] == "harness-error"


def test_writes_are_deterministic(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    results.write_text_atomic(a, results.dumps(sample()))
    results.write_text_atomic(b, results.dumps(json.loads(a.read_text())))
    assert a.read_bytes() == b.read_bytes()


def test_a_truncated_file_is_named(tmp_path):
    path = tmp_path / "fa-1.0.0_st-1.0.0_py3.11.json"
    path.write_text(results.dumps(sample())[:200])
    with pytest.raises(results.ResultError, match="not valid JSON") as err:
        results.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_wrong_schema_version_is_refused(tmp_path):
    data = sample()
    data["schema_version"] = 99
    path = tmp_path / "fa-1.0.0_st-1.0.0_py3.11.json"
    path.write_text(json.dumps(data))
    with pytest.raises(results.ResultError, match="schema_version 99"):
        results.load(path)


def test_provenance_that_contradicts_the_file_name_is_refused(tmp_path):
    path = tmp_path / "fa-2.0.0_st-1.0.0_py3.11.json"
    path.write_text(results.dumps(sample()))
    with pytest.raises(results.ResultError, match="contradicts its file name"):
        results.load(path)


def test_an_invalid_result_is_never_written(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("previous")
    bad = sample()
    bad["state"] = "fine"
    with pytest.raises(results.ResultError):
        results.write(path, bad)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_aggregate_worst_outcome_wins():
    rec = {"clauses": ["ATTACH-3"], "verdicts": {}, "outcome": "harness-error", "test": "t1"}
    ok = {"clauses": ["ATTACH-3"], "outcome": "ok", "test": "t2",
          "verdicts": {"ATTACH-3": {"verdict": "conforms", "label": "merge"}}}
    assert results.aggregate([rec, ok], spec.load(), "fastapi")["ATTACH-3"]["verdict"] == (
        "harness-error")
    dev = dict(ok, test="t3", verdicts={"ATTACH-3": {"verdict": "deviates", "label": "drop"}})
    agg = results.aggregate([ok, dev], spec.load(), "fastapi")["ATTACH-3"]
    assert (agg["verdict"], agg["label"]) == ("deviates", "drop; merge")


def test_hostile_text_stays_intact_in_the_raw_file(tmp_path):
    data = sample()
    hostile = "<script>alert(1)</script> | a | b |\n" + "\udcff" + "x" * 100_000
    data["tests"][0]["error"] = hostile
    path = tmp_path / f"{data['cell']['id']}.json"
    results.write(path, data)
    assert results.load(path)["tests"][0]["error"] == hostile
