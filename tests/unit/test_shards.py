"""Shards: the split CI runs, the matrix it is built from, and a merge that publishes all or
nothing. Cells are run by a fake runner (as in test_sweep): no environment is built."""

import json
import re
import shutil
from datetime import datetime, timezone

import pytest

from bgmatrix import cli, results, snapshot
from bgmatrix.plan import store
from bgmatrix.run import shards, sweep
from tests.unit.test_results import sample

CELLS = [
    {"id": f"fa-1.0.{i}_st-1.0.0_py3.{8 + i % 3}", "kind": "fastapi", "fastapi": f"1.0.{i}",
     "starlette": "1.0.0", "python": f"3.{8 + i % 3}", "cutoff": "2026-01-01T00:00:00Z",
     "in_declared_range": True, "starlette_bound": "only",
     "tags": ["fastapi", f"py3.{8 + i % 3}", f"shard-{i % 2 + 1}"] + (["era-x"] if i < 2 else [])}
    for i in range(6)
]
SHARD_1 = [c["id"] for c in CELLS if "shard-1" in c["tags"]]
SHARD_2 = [c["id"] for c in CELLS if "shard-2" in c["tags"]]


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"schema": store.PLAN_SCHEMA, "cells": CELLS}))
    return path



def shards_main(plan_file, *args):
    return cli.main(["shard", "--plan", str(plan_file), *args])


def run_both_shards(plan_file, tmp_path):
    for k in (1, 2):
        assert shards_main(plan_file, "run", str(k), "2", "--out", str(tmp_path / f"s{k}")) == 0
    return tmp_path / "s1", tmp_path / "s2"


def test_two_shards_run_their_tagged_cells_and_merge(plan_file, fake_runs, tmp_path, capsys):
    s1, s2 = run_both_shards(plan_file, tmp_path)
    assert sorted(p.stem for p in results.result_paths(s1)) == sorted(SHARD_1)
    assert sorted(p.stem for p in results.result_paths(s2)) == sorted(SHARD_2)
    assert sorted(fake_runs) == sorted(c["id"] for c in CELLS)  # each cell ran exactly once
    capsys.readouterr()
    into = tmp_path / "results"
    assert shards_main(plan_file, "merge", str(s1), str(s2), "--into", str(into)) == 0
    out = capsys.readouterr().out
    assert sorted(p.stem for p in results.result_paths(into)) == sorted(c["id"] for c in CELLS)
    for cell_id in SHARD_1:
        assert (into / f"{cell_id}.json").read_bytes() == (s1 / f"{cell_id}.json").read_bytes()
    assert "6 written, 0 unchanged" in out
    assert f"snapshot {snapshot.snapshot_id(into)}" in out
    # Merging the same folders again changes nothing.
    assert shards_main(plan_file, "merge", str(s1), str(s2), "--into", str(into)) == 0
    assert "0 written, 6 unchanged" in capsys.readouterr().out


def test_a_missing_shard_is_refused_naming_the_missing_cells(plan_file, fake_runs, tmp_path,
                                                            capsys):
    s1, _ = run_both_shards(plan_file, tmp_path)
    capsys.readouterr()
    into = tmp_path / "results"
    assert shards_main(plan_file, "merge", str(s1), "--into", str(into)) == 2
    err = capsys.readouterr().err.splitlines()
    missing = [line for line in err if "missing:" in line]
    assert len(missing) == len(SHARD_2)  # one line per problem
    for cell_id in SHARD_2:
        assert any(cell_id in line for line in missing)
    assert "nothing written" in err[-1]
    assert not into.exists()  # nothing written, not even the folder


def test_a_cell_in_two_folders_is_refused(plan_file, fake_runs, tmp_path, capsys):
    s1, s2 = run_both_shards(plan_file, tmp_path)
    twin = tmp_path / "s3"
    twin.mkdir()
    (twin / f"{SHARD_1[0]}.json").write_bytes((s1 / f"{SHARD_1[0]}.json").read_bytes())
    shutil.copytree(s1 / "evidence", twin / "evidence")  # a shard carries its evidence
    into = tmp_path / "results"
    into.mkdir()
    capsys.readouterr()
    assert shards_main(plan_file, "merge", str(s1), str(s2), str(twin), "--into",
                       str(into)) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "duplicate:" in ln]
    assert SHARD_1[0] in line and str(s1) in line and str(twin) in line
    assert list(into.iterdir()) == []


def test_an_invalid_file_is_refused_naming_it_and_why(plan_file, fake_runs, tmp_path, capsys):
    s1, s2 = run_both_shards(plan_file, tmp_path)
    broken = s2 / f"{SHARD_2[0]}.json"
    broken.write_text(broken.read_text()[:100])
    stray = s2 / "fa-9.9.9_st-1.0.0_py3.8.json"  # valid, but no such cell is planned
    data = sample("fa-9.9.9_st-1.0.0_py3.8")
    data["cell"].update(fastapi="9.9.9", python="3.8")
    results.write(stray, data)  # stored with its evidence, as a shard writes it
    capsys.readouterr()
    into = tmp_path / "results"
    assert shards_main(plan_file, "merge", str(s1), str(s2), "--into", str(into)) == 2
    err = capsys.readouterr().err
    assert re.search(rf"invalid: .*{re.escape(str(broken))}: not valid JSON", err)
    assert f"unexpected: {stray}" in err
    # The truncated cell is also missing: no valid file holds it.
    assert f"missing: {SHARD_2[0]}" in err
    assert not into.exists()


def test_a_tag_run_is_merged_against_the_tagged_cells_only(plan_file, fake_runs, tmp_path,
                                                          capsys):
    out = tmp_path / "era"
    tagged = [c["id"] for c in CELLS if "era-x" in c["tags"]]
    sweep.sweep([c for c in CELLS if c["id"] in tagged], out, jobs=1)
    into = tmp_path / "results"
    assert shards_main(plan_file, "merge", str(out), "--into", str(into), "--tag", "era-x",
                       "--cell", "") == 0
    assert sorted(p.stem for p in results.result_paths(into)) == sorted(tagged)
    # Without the tag, the same folder is an incomplete sweep of the whole plan.
    assert shards_main(plan_file, "merge", str(out), "--into", str(into)) == 2
    assert shards_main(plan_file, "merge", str(out), "--into", str(into), "--tag", "nope") == 2
    assert "no cell is tagged 'nope'" in capsys.readouterr().err


def test_another_shard_count_deals_round_robin():
    assert [c["id"] for c in shards.cells_for_shard(CELLS, 2, 2)] == SHARD_2
    thirds = [shards.cells_for_shard(CELLS, k, 3) for k in (1, 2, 3)]
    assert [c["id"] for c in thirds[0]] == [CELLS[0]["id"], CELLS[3]["id"]]
    assert sorted(c["id"] for part in thirds for c in part) == sorted(c["id"] for c in CELLS)
    with pytest.raises(shards.ShardError, match="K must be 1..N"):
        shards.cells_for_shard(CELLS, 4, 3)


def test_an_impossible_shard_is_one_line_exit_2(plan_file, capsys):
    assert shards_main(plan_file, "run", "3", "2", "--out", "x") == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_matrix_groups_nox_sessions_by_shard_tag():
    listing = [{"session": "headline", "name": "headline", "tags": []}] + [
        {"session": c["id"], "name": c["id"], "python": None, "tags": c["tags"]} for c in CELLS
    ]
    jobs = shards.actions_matrix(listing)
    assert [j["shard"] for j in jobs] == ["shard-1", "shard-2"]
    assert jobs[0]["cells"].split() == SHARD_1 and jobs[0]["count"] == len(SHARD_1)
    # The host's interpreter comes last: setup-python makes the last one the default.
    assert jobs[0]["pythons"].splitlines() == ["3.8", "3.9", "3.10", "3.11"]
    with pytest.raises(shards.ShardError, match="no cell session"):
        shards.actions_matrix(listing[:1])
    many = [{"name": f"c{i}", "tags": [f"shard-{i}"]} for i in range(1, shards.MAX_JOBS + 2)]
    with pytest.raises(shards.ShardError, match="256-job matrix"):
        shards.actions_matrix(many)


def test_the_committed_plan_fits_one_matrix_and_every_cell_has_one_job():
    cells = store.load_cells()
    listing = [{"name": c["id"], "tags": c["tags"]} for c in cells]
    jobs = shards.actions_matrix(listing)
    assert 1 <= len(jobs) <= shards.MAX_JOBS
    assert len(jobs) == shards.shard_count(cells)
    ran = [cell_id for j in jobs for cell_id in j["cells"].split()]
    assert sorted(ran) == sorted(c["id"] for c in cells)
    for k, job in enumerate(jobs, start=1):
        assert job["cells"].split() == [c["id"] for c in shards.cells_for_shard(
            cells, k, shards.shard_count(cells))]


def test_matrix_command_reads_nox_json(tmp_path, capsys):
    listing = tmp_path / "sessions.json"
    listing.write_text(json.dumps([{"name": c["id"], "tags": c["tags"]} for c in CELLS]))
    assert cli.main(["shard", "matrix", str(listing)]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert len(jobs) == 2
    listing.write_text("nox > not json")
    assert cli.main(["shard", "matrix", str(listing)]) == 2


def test_snapshot_id_is_the_run_date_and_a_content_hash(plan_file, fake_runs, tmp_path):
    s1, s2 = run_both_shards(plan_file, tmp_path)
    first = snapshot.snapshot_id(s1)
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert re.fullmatch(rf"{today}-[0-9a-f]{{7}}", first)
    # Same content under another folder name: same id; other content: another.
    copy = tmp_path / "copy"
    shutil.copytree(s1, copy)
    assert snapshot.snapshot_id(copy) == first
    p = next(copy.glob("fa-*.json"))
    data = json.loads(p.read_text())
    data["message"] = "changed"
    p.write_text(json.dumps(data))
    assert snapshot.snapshot_id(copy) != first
    (copy / "run.json").unlink()
    assert snapshot.snapshot_id(copy).startswith("undated-")
    assert snapshot.snapshot_id(tmp_path / "empty").startswith("undated-")


def test_cells_without_an_interpreter_are_merged_with_a_warning(plan_file, fake_runs, tmp_path,
                                                                capsys):
    s1, s2 = run_both_shards(plan_file, tmp_path)
    lacking = s1 / f"{SHARD_1[0]}.json"
    data = json.loads(lacking.read_text())
    data["state"], data["message"] = "no-interpreter", "no CPython 3.8 on this machine"
    lacking.write_text(json.dumps(data))
    capsys.readouterr()
    assert shards_main(plan_file, "merge", str(s1), str(s2), "--into",
                       str(tmp_path / "results")) == 0
    captured = capsys.readouterr()
    assert "without verdicts: 1 no-interpreter" in captured.out
    assert "warning: 1 cell(s) found no interpreter" in captured.err
