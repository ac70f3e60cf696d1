"""Sweeps: current cells are skipped, interruption loses only unfinished cells, and two
sweeps on one results folder never run a cell twice."""

import threading

import pytest

from bgmatrix import results
from bgmatrix.run import runner, sweep

CELLS = [
    {"id": f"fa-1.0.{i}_st-1.0.0_py3.11", "kind": "fastapi", "fastapi": f"1.0.{i}",
     "starlette": "1.0.0", "python": "3.11", "cutoff": "2026-01-01T00:00:00Z",
     "in_declared_range": True, "tags": []}
    for i in range(4)
]



def test_current_cells_are_skipped_and_force_reruns(fake_runs, tmp_path):
    sweep.sweep(CELLS, tmp_path, jobs=2)
    assert sorted(fake_runs) == sorted(c["id"] for c in CELLS)
    again = sweep.sweep(CELLS, tmp_path, jobs=2)
    assert again.skipped == len(CELLS) and len(fake_runs) == len(CELLS)
    sweep.sweep(CELLS[:1], tmp_path, jobs=1, force=True)
    assert len(fake_runs) == len(CELLS) + 1


def test_an_interrupted_sweep_resumes_with_only_unfinished_cells(fake_runs, tmp_path,
                                                                 monkeypatch):
    real = runner.run_cell

    def interrupted(c, install=None):
        if c["id"] == CELLS[2]["id"]:
            raise KeyboardInterrupt
        return real(c)

    monkeypatch.setattr(runner, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep.sweep(CELLS, tmp_path, jobs=1)
    assert sorted(p.stem for p in results.result_paths(tmp_path)) == [c["id"] for c in CELLS[:2]]
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(runner, "run_cell", real)
    fake_runs.clear()
    summary = sweep.sweep(CELLS, tmp_path, jobs=1)
    assert summary.skipped == 2 and fake_runs == [c["id"] for c in CELLS[2:]]


def test_a_corrupt_result_is_rerun(fake_runs, tmp_path):
    sweep.sweep(CELLS[:1], tmp_path, jobs=1)
    (tmp_path / f"{CELLS[0]['id']}.json").write_text("{ truncated")
    fake_runs.clear()
    sweep.sweep(CELLS[:1], tmp_path, jobs=1)
    assert fake_runs == [CELLS[0]["id"]]


def test_a_cell_locked_by_another_sweep_is_not_run_twice(fake_runs, tmp_path):
    held = sweep._Lock(runner.WORK_DIR / "locks", CELLS[0]["id"])
    assert held.acquire()
    try:
        summary = sweep.sweep(CELLS[:2], tmp_path, jobs=2)
    finally:
        held.release()
    assert summary.busy == [CELLS[0]["id"]] and fake_runs == [CELLS[1]["id"]]


def test_two_sweeps_at_once_run_each_cell_once(fake_runs, tmp_path):
    threads = [threading.Thread(target=sweep.sweep, args=(CELLS, tmp_path, 2)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fake_runs) == sorted(c["id"] for c in CELLS)


def test_a_sweep_reports_its_wall_time_against_the_cells_own(fake_runs, tmp_path, monkeypatch):
    """Each cell's own time is summed; the wall time over that sum spread on the workers is
    the scheduling overhead (1.0 wastes nothing). Fake cells that each sleep make both
    figures known without timing anything in an assertion."""
    import time as real_time

    fake = runner.run_cell

    def slow(c, install=None):
        real_time.sleep(0.2)
        return fake(c)

    monkeypatch.setattr(runner, "run_cell", slow)
    summary = sweep.sweep(CELLS, tmp_path, jobs=2)
    assert summary.jobs == 2 and len(summary.done) == len(CELLS)
    assert summary.cell_seconds >= 0.2 * len(CELLS)  # each cell slept at least that long
    assert summary.efficiency is not None and summary.efficiency > 0
    assert summary.efficiency == summary.wall / (summary.cell_seconds / 2)
    again = sweep.sweep(CELLS, tmp_path, jobs=2)  # nothing run: no ratio to speak of
    assert again.cell_seconds == 0 and again.efficiency is None
