"""A re-run never discards evidence it did not re-measure (issue 17).

Every path that writes results — a raw sweep over a cell that carries wire evidence, a wire
re-run, a candidate re-run, a shard merge — keeps the evidence sources it did not measure,
byte for byte; a kept source whose method changed says it is stale; only the option named for
it discards one.
"""

import json

from bgmatrix import evidence, results
from bgmatrix.run import candidates, runner, shards, sweep
from tests.unit.test_results import servers_section, wire_section

CELLS = [
    {"id": f"fa-1.0.{i}_st-1.0.0_py3.11", "kind": "fastapi", "fastapi": f"1.0.{i}",
     "starlette": "1.0.0", "python": "3.11", "cutoff": "2026-01-01T00:00:00Z",
     "in_declared_range": True, "tags": []}
    for i in range(2)
]


def wire_of(path):
    return json.loads(path.read_text())["wire"]


def seed_with_wire(folder, fake_runs, monkeypatch, wire_hash):
    """Run the cells once with wire evidence, as `nox -s wire` would."""
    fake = runner.run_cell

    def with_wire(c, install=None):
        return dict(fake(c), wire=wire_section(wire_hash), servers=servers_section(wire_hash))

    monkeypatch.setattr(runner, "run_cell", with_wire)
    sweep.sweep(CELLS, folder, jobs=1, force=True)
    monkeypatch.setattr(runner, "run_cell", fake)
    return {c["id"]: (folder / f"{c['id']}.json").read_text() for c in CELLS}


def test_a_forced_raw_sweep_keeps_every_wire_section(fake_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "current_methods", lambda: {"wire": "w1", "servers": "w1"})
    before = seed_with_wire(tmp_path, fake_runs, monkeypatch, "w1")
    sweep.sweep(CELLS, tmp_path, jobs=2, force=True)
    for c in CELLS:
        path = tmp_path / f"{c['id']}.json"
        assert path.read_text() == before[c["id"]]  # the same behaviour: not a byte changed
        assert results.load(path)["wire"]["clauses"]["ATTACH-3"]["evidence"]["status"] == 200


def test_a_raw_sweep_after_the_wire_method_changed_marks_it_stale(fake_runs, tmp_path,
                                                                 monkeypatch):
    seed_with_wire(tmp_path, fake_runs, monkeypatch, "w1")
    monkeypatch.setattr(runner, "current_methods", lambda: {"wire": "w2", "servers": "w2"})
    sweep.sweep(CELLS, tmp_path, jobs=1, force=True)
    for c in CELLS:
        wire = wire_of(tmp_path / f"{c['id']}.json")
        assert "stale" in wire and wire["clauses"]["ATTACH-3"][1] == "drop"  # [verdict, label, ...]
        others = json.loads((tmp_path / f"{c['id']}.json").read_text())["servers"]
        assert "stale" in others and others["runs"]["hypercorn"]["clauses"]["MW-3"][0] == "deviates"


def test_a_wire_rerun_replaces_the_wire_evidence(fake_runs, tmp_path, monkeypatch):
    seed_with_wire(tmp_path, fake_runs, monkeypatch, "w1")
    monkeypatch.setattr(runner, "current_methods", lambda: {"wire": "w2"})
    seed_with_wire(tmp_path, fake_runs, monkeypatch, "w2")
    wire = wire_of(tmp_path / f"{CELLS[0]['id']}.json")
    assert wire["wire_hash"] == "w2" and "stale" not in wire


def test_only_the_discard_option_drops_wire_evidence(fake_runs, tmp_path, monkeypatch):
    seed_with_wire(tmp_path, fake_runs, monkeypatch, "w1")
    sweep.sweep(CELLS, tmp_path, jobs=1, force=True, discard_unmeasured=True)
    assert all("wire" not in json.loads((tmp_path / f"{c['id']}.json").read_text())
               for c in CELLS)


def test_a_candidate_rerun_keeps_its_wire_evidence(fake_runs, tmp_path, monkeypatch):
    base = candidates.Base("1.0.0", "1.0.0", "3.11", "2026-01-01T00:00:00Z", True)
    (tmp_path / "x.whl").write_bytes(b"a wheel")  # the result records its sha256
    build = candidates.Build("x", tmp_path / "x.whl", "1.0.0", True)
    cell = candidates.candidate_cell(build, base)
    fake = runner.run_cell

    def as_candidate(c, install=None):
        data = fake(c)
        data["cell"].update(id=c["id"], kind="candidate", candidate="x", fastapi="1.0.0",
                            build=c["build"])
        return data

    monkeypatch.setattr(runner, "run_cell", as_candidate)
    monkeypatch.setattr(candidates, "base_release", lambda *a, **k: base)
    monkeypatch.setattr(runner, "current_methods", lambda: {"wire": "w1"})
    path = tmp_path / f"{cell['id']}.json"
    results.write(path, dict(as_candidate(cell), wire=wire_section("w1")))
    before = path.read_text()
    candidates.run(build, tmp_path)  # the raw suite again, as `bgmatrix candidates` does
    assert path.read_text() == before


def test_a_shard_merge_keeps_wire_evidence_the_shard_did_not_measure(fake_runs, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(runner, "current_methods", lambda: {"wire": "w1"})
    into = tmp_path / "results"
    before = seed_with_wire(into, fake_runs, monkeypatch, "w1")
    shard = tmp_path / "shard"
    sweep.sweep(CELLS, shard, jobs=1, force=True)  # a CI shard: raw only
    assert all("wire" not in json.loads((shard / f"{c['id']}.json").read_text()) for c in CELLS)
    counts = shards.merge([shard], into, [c["id"] for c in CELLS])
    assert counts["unchanged"] == len(CELLS)
    for c in CELLS:
        assert (into / f"{c['id']}.json").read_text() == before[c["id"]]


def test_the_cli_keeps_wire_unless_told_by_name(fake_runs, tmp_path, monkeypatch):
    from bgmatrix import cli
    from bgmatrix.plan import store

    monkeypatch.setattr(runner, "current_methods", lambda: {"wire": "w1"})
    cell = next(c for c in store.load_cells() if c["kind"] == "fastapi")
    path = tmp_path / f"{cell['id']}.json"
    seeded = runner.run_cell(cell)
    results.write(path, dict(seeded, wire=wire_section("w1")))
    before = wire_of(path)
    assert cli.main(["run", cell["id"], "--force", "--results", str(tmp_path)]) == 0
    assert wire_of(path) == before
    assert cli.main(["run", cell["id"], "--force", "--results", str(tmp_path),
                     "--discard-unmeasured-evidence"]) == 0
    assert "wire" not in json.loads(path.read_text())


def test_a_sweep_leaves_exactly_the_evidence_its_results_name(fake_runs, tmp_path,
                                                              monkeypatch):
    sweep.sweep(CELLS, tmp_path, jobs=1)
    first = evidence.Store(tmp_path).keys()
    fake = runner.run_cell

    def changed(c, install=None):  # every cell now observes something else
        data = fake(c)
        data["tests"][0]["observations"]["request"] = {"effects": ["other"]}
        return data

    monkeypatch.setattr(runner, "run_cell", changed)
    sweep.sweep(CELLS, tmp_path, jobs=1, force=True)
    store = evidence.Store(tmp_path)
    now = store.keys()
    named = set().union(*(results.referenced(results.load_stored(p), store)
                          for p in results.result_paths(tmp_path)))
    assert now == named  # nothing orphaned, nothing missing
    assert first - now  # the objects of the old behaviour are gone
