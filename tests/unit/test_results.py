"""Result files: schema, the evidence store and its packs, atomic and deterministic writes,
sources a run did not re-measure, the conversions from schemas 1 and 2, and one-line errors for
every kind of bad file."""

import json
import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from bgmatrix import evidence, results, schemas, snapshot, spec
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


def servers_section(servers_hash="w1"):
    """A result's ``servers``: two other servers, one that served and one that could not."""
    served = {"state": "ok", "message": None, "version": "0.18.0", "server": {"added": {}},
              "clauses": {"MW-3": {"verdict": "deviates", "label": "sync:swallowed",
                                   "evidence": {"sync": {"status": 200}}}}}
    missing = {"state": "wire-unavailable", "message": "no granian as of the cell's cutoff",
               "version": None, "server": {}, "clauses": {}}
    return {"servers_hash": servers_hash, "runs": {"hypercorn": served, "granian": missing}}


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
    assert '  "ATTACH-3": ["deviates", "drop"],\n' in text
    assert '  "COLLECT-1": ["harness-error", "-", "no test of this clause ran in this cell"],\n' \
        in text
    assert stored["observed"] == {"framework": {"fastapi": "1.0.0", "framework": "fastapi",
                                                "starlette": "1.0.0"}}
    tests = evidence.Store(tmp_path).get(stored["tests"])
    assert sorted(tests) == ["test_attachment.py::test_x", "test_attachment.py::test_y"]
    assert "request" not in text and "started" not in text


def test_the_stored_text_is_exactly_this(tmp_path):
    # A literal: sorting keys (clauses by number), indentation and ASCII escapes are the
    # format; a change to any of them must show up here, not in a diff of 670 files.
    stored = {"b": {"z": 1, "a": [2, "é"]}, "clauses": {"MW-10": ["x", "y"],
                                                         "MW-9": ["n/a", "n/a", "why"]},
              "a": None}
    assert results.dumps(stored) == (
        '{\n "a": null,\n "b": {\n  "a": [2, "\\u00e9"],\n  "z": 1\n },\n'
        ' "clauses": {\n  "MW-9": ["n/a", "n/a", "why"],\n  "MW-10": ["x", "y"]\n }\n}\n')


def test_a_stored_clause_line_expands_to_the_full_entry(tmp_path):
    path, _ = write(tmp_path, dict(sample(), wire=dict(wire_section(), clauses={
        "ATTACH-3": {"verdict": "n/a", "label": "n/a", "reason": "why",
                     "evidence": {"status": 200}}})))
    stored = json.loads(path.read_text())
    key = evidence.digest({"status": 200})
    assert stored["wire"]["clauses"]["ATTACH-3"] == ["n/a", "n/a", key, "why"]
    full = results.load(path)
    assert full["wire"]["clauses"]["ATTACH-3"] == {"verdict": "n/a", "label": "n/a",
                                                  "reason": "why", "evidence": {"status": 200}}
    assert full["clauses"]["COLLECT-1"] == {"verdict": "harness-error", "label": "-", "tests": [],
                                            "reason": "no test of this clause ran in this cell"}
    assert stored["schema_version"] == 3 and full["schema_version"] == 2  # the content's


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
    assert {p.name: p.read_bytes() for p in evidence.Store(a).pack_paths()} == {
        p.name: p.read_bytes() for p in evidence.Store(b).pack_paths()}


def test_rewriting_the_same_behaviour_touches_nothing(tmp_path):
    path, changed = write(tmp_path, sample())
    assert changed
    def files():
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")
                if p.is_file() and p.name != ".lock"}

    before = files()
    assert any(p.suffix == ".jsonl" for p in before)
    _, changed = write(tmp_path, sample())
    assert not changed
    assert files() == before


def test_cells_that_observed_the_same_thing_share_their_evidence(tmp_path):
    def stored():
        return evidence.Store(tmp_path).keys()

    write(tmp_path, sample("fa-1.0.0_st-1.0.0_py3.11"))
    first = stored()
    write(tmp_path, sample("fa-1.0.0_st-1.0.0_py3.12".replace("3.12", "3.11")))
    other = sample("fa-1.0.1_st-1.0.0_py3.11")
    other["cell"]["fastapi"] = "1.0.1"
    write(tmp_path, other)
    assert stored() == first  # same records, same objects
    write(tmp_path, sample("fa-1.0.2_st-1.0.0_py3.11", effects=("own", "a")))
    assert len(stored() - first) == 3  # observation, record, set


def test_an_edited_evidence_object_is_an_error_naming_it(tmp_path):
    path, _ = write(tmp_path, sample())
    victim = next(p for p in evidence.Store(tmp_path).pack_paths() if '"own"' in p.read_text())
    lines = victim.read_text().splitlines()
    number = next(i for i, text in enumerate(lines, 1) if '"own"' in text)
    victim.write_text(victim.read_text().replace('"own"', '"someone else"'))
    with pytest.raises(results.ResultError, match="does not match its hash") as err:
        results.load(path)
    assert f"{victim} line {number}:" in str(err.value) and "\n" not in str(err.value)


def test_a_missing_evidence_object_is_an_error(tmp_path):
    path, _ = write(tmp_path, sample())
    for pack in evidence.Store(tmp_path).pack_paths():
        pack.unlink()
    with pytest.raises(results.ResultError, match="evidence object is missing"):
        results.load(path)


def test_a_corrupt_pack_line_is_named_in_one_line_and_nothing_is_lost(tmp_path):
    path, _ = write(tmp_path, sample())
    store = evidence.Store(tmp_path)
    victim = store.path(json.loads(path.read_text())["tests"])  # the pack of the test set
    lines = victim.read_text().splitlines(keepends=True)
    number = next(i for i, text in enumerate(lines, 1) if text.startswith(
        '{"key":"' + json.loads(path.read_text())["tests"]))
    lines[number - 1] = lines[number - 1][: len(lines[number - 1]) // 2] + "\n"  # cut short
    damaged = "".join(lines)
    victim.write_text(damaged)
    with pytest.raises(results.ResultError) as err:
        results.load(path)
    message = str(err.value)
    assert f"{victim} line {number}" in message and "\n" not in message, message
    assert str(path) in message
    # Nothing rewrites a pack it cannot read in full: a write that would add to it refuses
    # (one line, naming it), garbage collection leaves it, and the damaged line stays.
    new = next(o for o in ({"x": i} for i in range(500))
               if store.path(evidence.digest(o)) == victim)
    with pytest.raises(evidence.EvidenceError, match=f"{victim} line {number}: ") as err:
        evidence.Store(tmp_path).add({evidence.digest(new): new})
    assert "\n" not in str(err.value)
    path.unlink()
    results.collect_garbage(tmp_path)
    assert victim.read_text() == damaged


def _add_objects(folder, start):
    evidence.Store(folder).add({evidence.digest({"n": i}): {"n": i}
                                for i in range(start, start + 40)})


def test_two_writers_at_once_lose_no_object(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_objects, args=(tmp_path, start)) for start in (0, 1000)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    store = evidence.Store(tmp_path)
    want = {evidence.digest({"n": i}): {"n": i} for i in [*range(40), *range(1000, 1040)]}
    assert store.keys() == set(want)
    assert all(store.get(key) == obj for key, obj in want.items())
    for pack in store.pack_paths():  # sorted, one canonical line an object
        lines = pack.read_text().splitlines()
        assert lines == sorted(lines)
        assert all(text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
                   for text in lines)


def test_a_truncated_file_is_named(tmp_path):
    path, _ = write(tmp_path, sample())
    path.write_text(path.read_text()[:200])
    with pytest.raises(results.ResultError, match="not valid JSON") as err:
        results.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_wrong_schema_version_is_refused(tmp_path):
    path, _ = write(tmp_path, sample())
    path.write_text(path.read_text().replace('"schema_version": 3', '"schema_version": 99'))
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
    assert wire["clauses"]["ATTACH-3"][:2] == ["deviates", "drop"]  # still there, marked
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
    before = evidence.Store(tmp_path).keys()
    write(tmp_path, other)
    (tmp_path / "fa-9.9.9_st-1.0.0_py3.11.json").write_text("{")  # unreadable: names unknown
    (tmp_path / f"{other['cell']['id']}.json").unlink()
    assert results.collect_garbage(tmp_path) == 0
    assert evidence.Store(tmp_path).keys() > before


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


#: Issue 11: "`du -sh results` is at most 10 MB for the full matrix", on disk (blocks, not
#: bytes), every file under results/ counted: result files, evidence packs, run record.
BUDGET = 10 * 1024 * 1024


def test_the_committed_results_are_small(tmp_path):
    folder = results.RESULTS_DIR
    used = sum(os.stat(p).st_blocks * 512 for p in folder.rglob("*") if p.is_file())
    cells = len(results.result_paths(folder))
    assert used <= BUDGET, f"results/ takes {used / 2**20:.1f} MiB on disk for {cells} cells"


# --- conversion from schema 2 --------------------------------------------------------------


def v2_of(folder, full):
    """A schema-2 folder as the previous round wrote it: clause mappings, one file an object."""
    stored, objects = results.compact(full)
    stored = json.loads(json.dumps(stored))
    stored["schema_version"] = 2
    stored["clauses"] = {
        cid: {"verdict": e[0], "label": e[1], **({"reason": e[2]} if e[2:] else {})}
        for cid, e in stored["clauses"].items()}
    if "wire" in stored:
        stored["wire"]["clauses"] = {
            cid: {"verdict": e[0], "label": e[1], "evidence": e[2],
                  **({"reason": e[3]} if e[3:] else {})}
            for cid, e in stored["wire"]["clauses"].items()}
    (folder / "evidence").mkdir(parents=True, exist_ok=True)
    for key, obj in objects.items():
        (folder / "evidence" / f"{key}.json").write_text(
            json.dumps(obj, sort_keys=True, ensure_ascii=True, indent=1) + "\n")
    (folder / f"{full['cell']['id']}.json").write_text(results.dumps(stored))


def test_the_v2_converter_packs_the_evidence_and_changes_no_content(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import convert_results_v2

    fulls = [dict(sample(), wire=wire_section()), sample("fa-1.0.2_st-1.0.0_py3.11",
                                                         effects=("x",))]
    for full in fulls:
        v2_of(tmp_path, full)
    assert len(list((tmp_path / "evidence").glob("*.json"))) > 3
    before = snapshot.content_hash({f["cell"]["id"]: f for f in fulls})
    assert convert_results_v2.convert(tmp_path) == 2
    for full in fulls:
        assert results.load(tmp_path / f"{full['cell']['id']}.json") == full
        assert json.loads((tmp_path / f"{full['cell']['id']}.json").read_text())[
            "schema_version"] == 3
    assert snapshot.content_hash(results.load_all(tmp_path)[0]) == before
    assert not list((tmp_path / "evidence").glob("*.json"))  # every object is in a pack now
    again = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())
    assert convert_results_v2.convert(tmp_path) == 0  # idempotent
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()) == again


def test_the_v2_converter_refuses_an_edited_object_and_changes_nothing(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import convert_results_v2

    v2_of(tmp_path, sample())
    victim = next(p for p in (tmp_path / "evidence").glob("*.json") if '"own"' in p.read_text())
    victim.write_text(victim.read_text().replace('"own"', '"other"'))
    before = sorted((p, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(SystemExit, match="does not match its hash"):
        convert_results_v2.convert(tmp_path)
    assert sorted((p, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()) == before


def test_every_servers_run_round_trips_with_its_evidence_packed(tmp_path):
    data = dict(sample(), wire=wire_section(), servers=servers_section())
    path, _ = write(tmp_path, data)
    assert results.load(path) == data
    stored = json.loads(path.read_text())
    line = stored["servers"]["runs"]["hypercorn"]["clauses"]["MW-3"]
    assert line[:2] == ["deviates", "sync:swallowed"] and len(line[2]) == 16  # packed by hash
    assert line[2] in results.referenced(stored, evidence.Store(tmp_path))
    assert list(results.server_runs(data)) == ["uvicorn", "hypercorn", "granian"]


@pytest.mark.parametrize("damage", [
    lambda d: d["clauses"].__setitem__("ATTACH-3", ["maybe", "drop"]),  # a bad verdict
    lambda d: d["clauses"].__setitem__("attach-3", ["conforms", "ran"]),  # a bad clause name
    lambda d: d["clauses"].__setitem__("ATTACH-3", ["conforms"]),  # too short
    lambda d: d.__setitem__("state", "fine"),  # outside the clause map
])
def test_the_fast_result_check_agrees_with_the_full_schema(tmp_path, damage):
    path, _ = write(tmp_path, sample())
    stored = json.loads(path.read_text())
    assert schemas.result_problem(stored) is None and schemas.problem(stored, "result") is None
    assert schemas.result_problem(stored) is None  # again, from what it remembered
    damage(stored)
    found = schemas.result_problem(stored)
    assert found is not None and found == schemas.problem(stored, "result")
