"""Result files: schema, the evidence store, atomic and deterministic writes, sources a run did
not re-measure, the conversion from schema 1, and one-line errors for every kind of bad file."""

import json
import os
import sys
from pathlib import Path

import pytest

from bgmatrix import evidence, results, snapshot, spec
from bgmatrix.run import runner

ROOT = Path(__file__).resolve().parents[2]


def sample(cell_id="fa-1.0.0_st-1.0.0_py3.11", state="ok", effects=("own",)):
    c = {"id": cell_id, "kind": "fastapi", "fastapi": "1.0.0", "starlette": "1.0.0",
         "python": "3.11", "cutoff": "2026-01-01T00:00:00Z", "in_declared_range": True}
    framework = {"fastapi": "1.0.0", "framework": "fastapi", "starlette": "1.0.0"}
    records = [
        {"test": "test_attachment.py::test_x", "clauses": ["ATTACH-3"],
         "outcome": "ok", "error": None,
         "observations": {"request": {"effects": list(effects)}, "framework": framework},
         "verdicts": {"ATTACH-3": {"verdict": "deviates", "label": "drop", "expected": "merge"}}},
        {"test": "test_attachment.py::test_y", "clauses": ["ATTACH-1"],
         "outcome": "ok", "error": None,
         "observations": {"request": {"effects": ["a"]}, "framework": framework, "n": 3},
         "verdicts": {"ATTACH-1": {"verdict": "conforms", "label": "ran"}}},
    ]
    prov = {"spec_version": spec.spec_version(), "suite_hash": "abc", "tools": {"pytest": "8.3.5"},
            "python": "3.11.7", "implementation": "CPython"}
    return runner.result_for(c, state, None, prov, records)


def wire_section(wire_hash="w1"):
    return {"state": "ok", "message": None, "uvicorn": "0.30.0", "wire_hash": wire_hash,
            "clauses": {"ATTACH-3": {"verdict": "deviates", "label": "drop",
                                     "evidence": {"effects": ["own"], "status": 200}}}}


def write(folder, data, **kw):
    path = folder / f"{data['cell']['id']}.json"
    return path, results.write(path, data, **kw)


def test_a_built_result_validates_and_round_trips(tmp_path):
    data = sample()
    path, _ = write(tmp_path, data)
    assert results.load(path) == data
    assert data["clauses"]["ATTACH-3"]["verdict"] == "deviates"
    # a clause whose test did not run is a harness error, never a quiet n/a
    assert data["clauses"]["COLLECT-1"]["verdict"] == "harness-error"


def test_the_stored_file_names_its_evidence_and_holds_one_line_per_clause(tmp_path):
    path, _ = write(tmp_path, sample())
    text = path.read_text()
    stored = json.loads(text)
    assert '  "ATTACH-3": {"label": "drop", "verdict": "deviates"},\n' in text
    assert stored["observed"] == {"framework": {"fastapi": "1.0.0", "framework": "fastapi",
                                                "starlette": "1.0.0"}}
    tests = evidence.Store(tmp_path).get(stored["tests"])
    assert sorted(tests) == ["test_attachment.py::test_x", "test_attachment.py::test_y"]
    assert "request" not in text and "started" not in text


def test_the_stored_text_is_exactly_this(tmp_path):
    # A literal: sorting keys (clauses by number), indentation and ASCII escapes are the
    # format; a change to any of them must show up here, not in a diff of 670 files.
    stored = {"b": {"z": 1, "a": [2, "é"]}, "clauses": {"MW-10": {"verdict": "x", "label": "y"},
                                                         "MW-9": {}}, "a": None}
    assert results.dumps(stored) == (
        '{\n "a": null,\n "b": {\n  "a": [2, "\\u00e9"],\n  "z": 1\n },\n'
        ' "clauses": {\n  "MW-9": {},\n  "MW-10": {"label": "y", "verdict": "x"}\n }\n}\n')


def test_writes_are_deterministic_whatever_the_key_order(tmp_path):
    data = sample()
    shuffled = json.loads(json.dumps(data))
    shuffled = {k: shuffled[k] for k in reversed(list(shuffled))}
    shuffled["provenance"] = {k: shuffled["provenance"][k]
                              for k in reversed(list(shuffled["provenance"]))}
    a, b = tmp_path / "a", tmp_path / "b"
    pa, _ = write(a, data)
    pb, _ = write(b, shuffled)
    assert pa.read_bytes() == pb.read_bytes()
    assert sorted(p.name for p in (a / "evidence").iterdir()) == sorted(
        p.name for p in (b / "evidence").iterdir())


def test_rewriting_the_same_behaviour_touches_nothing(tmp_path):
    path, changed = write(tmp_path, sample())
    assert changed
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.json")}
    _, changed = write(tmp_path, sample())
    assert not changed
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.json")} == before


def test_cells_that_observed_the_same_thing_share_their_evidence(tmp_path):
    write(tmp_path, sample("fa-1.0.0_st-1.0.0_py3.11"))
    first = set((tmp_path / "evidence").iterdir())
    write(tmp_path, sample("fa-1.0.0_st-1.0.0_py3.12".replace("3.12", "3.11")))
    other = sample("fa-1.0.1_st-1.0.0_py3.11")
    other["cell"]["fastapi"] = "1.0.1"
    write(tmp_path, other)
    assert set((tmp_path / "evidence").iterdir()) == first  # same records, same objects
    write(tmp_path, sample("fa-1.0.2_st-1.0.0_py3.11", effects=("own", "a")))
    assert len(set((tmp_path / "evidence").iterdir()) - first) == 3  # observation, record, set


def test_an_edited_evidence_object_is_an_error_naming_it(tmp_path):
    path, _ = write(tmp_path, sample())
    victim = next(p for p in (tmp_path / "evidence").iterdir() if '"own"' in p.read_text())
    victim.write_text(victim.read_text().replace('"own"', '"someone else"'))
    with pytest.raises(results.ResultError, match="does not match its hash") as err:
        results.load(path)
    assert "\n" not in str(err.value)


def test_a_missing_evidence_object_is_an_error(tmp_path):
    path, _ = write(tmp_path, sample())
    for obj in (tmp_path / "evidence").iterdir():
        obj.unlink()
    with pytest.raises(results.ResultError, match="evidence object is missing"):
        results.load(path)


def test_a_truncated_file_is_named(tmp_path):
    path, _ = write(tmp_path, sample())
    path.write_text(path.read_text()[:200])
    with pytest.raises(results.ResultError, match="not valid JSON") as err:
        results.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_wrong_schema_version_is_refused(tmp_path):
    path, _ = write(tmp_path, sample())
    path.write_text(path.read_text().replace('"schema_version": 2', '"schema_version": 99'))
    with pytest.raises(results.ResultError, match="schema_version 99"):
        results.load(path)


def test_provenance_that_contradicts_the_file_name_is_refused(tmp_path):
    path, _ = write(tmp_path, sample())
    other = tmp_path / "fa-2.0.0_st-1.0.0_py3.11.json"
    path.rename(other)
    with pytest.raises(results.ResultError, match="contradicts its file name"):
        results.load(other)


def test_an_invalid_result_is_never_written(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("previous")
    bad = sample()
    bad["state"] = "fine"
    with pytest.raises(results.ResultError):
        results.write(path, bad)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file, no evidence


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
    path, _ = write(tmp_path, data)
    assert results.load(path)["tests"][0]["error"] == hostile


# --- evidence a run did not re-measure (issue 17) ------------------------------------------


def test_a_raw_rerun_keeps_the_wire_section_byte_for_byte(tmp_path):
    with_wire = dict(sample(), wire=wire_section("w1"))
    path, _ = write(tmp_path, with_wire)
    before = json.loads(path.read_text())["wire"]
    _, changed = write(tmp_path, sample(), current_methods={"wire": "w1"})
    assert not changed  # the same behaviour, the wire kept: not one byte differs
    _, changed = write(tmp_path, sample(effects=("own", "late")),
                       current_methods={"wire": "w1"})
    assert changed
    assert json.loads(path.read_text())["wire"] == before
    assert results.load(path)["wire"]["clauses"]["ATTACH-3"]["evidence"]["status"] == 200


def test_a_kept_source_whose_method_changed_says_it_is_stale(tmp_path):
    path, _ = write(tmp_path, dict(sample(), wire=wire_section("w1")))
    write(tmp_path, sample(), current_methods={"wire": "w2"})
    wire = json.loads(path.read_text())["wire"]
    assert "w1" in wire["stale"] and "w2" in wire["stale"]
    assert wire["clauses"]["ATTACH-3"]["label"] == "drop"  # still there, marked
    write(tmp_path, dict(sample(), wire=wire_section("w2")), current_methods={"wire": "w2"})
    assert "stale" not in json.loads(path.read_text())["wire"]  # re-measured: fresh again


def test_only_the_option_that_says_so_discards_a_source(tmp_path):
    path, _ = write(tmp_path, dict(sample(), wire=wire_section()))
    write(tmp_path, sample(), discard_unmeasured=True)
    assert "wire" not in json.loads(path.read_text())


def test_garbage_collection_keeps_every_referenced_object(tmp_path):
    write(tmp_path, dict(sample(), wire=wire_section()))
    other = sample("fa-1.0.2_st-1.0.0_py3.11", effects=("x",))
    path, _ = write(tmp_path, other)
    path.unlink()
    assert results.collect_garbage(tmp_path) == 3
    assert results.load_all(tmp_path)[1] == []
    assert results.collect_garbage(tmp_path) == 0
    before = set((tmp_path / "evidence").iterdir())
    write(tmp_path, other)
    (tmp_path / "fa-9.9.9_st-1.0.0_py3.11.json").write_text("{")  # unreadable: names unknown
    (tmp_path / f"{other['cell']['id']}.json").unlink()
    assert results.collect_garbage(tmp_path) == 0
    assert set((tmp_path / "evidence").iterdir()) > before


# --- run record and snapshot ids -----------------------------------------------------------


def test_the_run_record_changes_only_with_the_content(tmp_path):
    from datetime import datetime, timezone

    write(tmp_path, sample())
    now = datetime(2027, 1, 2, tzinfo=timezone.utc)
    assert snapshot.record_run(tmp_path, now, 1)
    record = (tmp_path / "run.json").read_bytes()
    first = snapshot.snapshot_id(tmp_path)
    assert first.endswith(json.loads(record)["content"][:7])
    assert not snapshot.record_run(tmp_path, now, 1)  # nothing changed: not rewritten
    assert (tmp_path / "run.json").read_bytes() == record
    write(tmp_path, sample(effects=("changed",)))
    assert snapshot.record_run(tmp_path, now, 1)
    assert snapshot.snapshot_id(tmp_path) != first


# --- conversion from schema 1 --------------------------------------------------------------


def v1_of(full, wire=True):
    """A schema-1 file as the first round wrote it: everything inline, run facts per file."""
    old = json.loads(json.dumps(full))
    old["schema_version"] = 1
    old["provenance"].pop("implementation")
    old["provenance"].update(started="2026-11-29T05:00:00Z", finished="2026-11-29T05:00:03Z",
                             interpreter="/root/.pyenv/versions/3.11.7/bin/python3.11",
                             platform="Linux x86_64")
    old["provenance"]["tools"].update({"bgmatrix": "0.1.0", "uv": "0.13.9",
                                       "host-python": "3.11.7"})
    if wire:
        old["wire"] = wire_section()
    return old


def test_the_converter_keeps_every_observation_and_moves_run_facts(tmp_path):
    full = sample()
    old = v1_of(full)
    (tmp_path / f"{full['cell']['id']}.json").write_text(json.dumps(old, indent=1))
    sys.path.insert(0, str(ROOT / "scripts"))
    import convert_results_v1

    assert convert_results_v1.convert(tmp_path) == 1
    back = results.load(tmp_path / f"{full['cell']['id']}.json")
    assert back["tests"] == old["tests"] and back["clauses"] == old["clauses"]
    assert back["wire"] == old["wire"]
    assert back["provenance"]["implementation"] == "CPython"
    assert "interpreter" not in back["provenance"] and "started" not in back["provenance"]
    run = snapshot.read_run(tmp_path)
    assert run["date"] == "2026-11-29" and run["host"]["uv"] == "0.13.9"
    assert snapshot.snapshot_id(tmp_path).startswith("2026-11-29-")
    again = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.json"))
    assert convert_results_v1.convert(tmp_path) == 0  # idempotent
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.json")) == again


#: On-disk budget per result file, evidence included. Issue 11 set 10 MB for 670 cells and 53
#: clauses (15 KiB a cell); spec 0.2.0 grades 70 clauses, timing clauses under 9 schedules
#: each, in 707+ cells, so the budget follows the matrix's size instead of staying a constant.
BUDGET_PER_RESULT = 24 * 1024


def test_the_committed_results_are_small(tmp_path):
    folder = results.RESULTS_DIR
    used = sum(os.stat(p).st_blocks * 512 for p in folder.rglob("*") if p.is_file())
    cells = len([p for p in folder.glob("*.json") if p.name != "run.json"])
    assert used <= cells * BUDGET_PER_RESULT, (
        f"results/ takes {used / 2**20:.1f} MiB on disk for {cells} cells")
