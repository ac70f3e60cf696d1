"""Running many cells: skip what is current, run the rest on every core, show progress.

A cell is current when its result file was made by this suite (hash) against this spec
version for exactly this cell (versions, interpreter, cutoff).  Each cell is claimed with an
exclusive lock file, so two sweeps on one results folder never run a cell twice; its result is
written atomically when it finishes, so a sweep killed at any point loses only the cells that
were running, and the next sweep re-runs exactly those.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from bgmatrix import results, snapshot, spec
from bgmatrix.run import runner

_KEY = ("id", "kind", "fastapi", "starlette", "python", "cutoff")


def is_current(existing: results.StoredResult | None, cell: Mapping[str, Any]) -> bool:
    if existing is None or existing["state"] == "no-interpreter":
        return False  # an interpreter may have been installed since: cheap to ask again
    prov = existing["provenance"]
    return (
        all(existing["cell"].get(k) == cell.get(k) for k in _KEY)
        and prov["suite_hash"] == runner.suite_hash()
        and prov["spec_version"] == spec.spec_version()
    )


@dataclass
class Summary:
    total: int
    skipped: int = 0
    busy: list[str] = field(default_factory=list)
    done: dict[str, str] = field(default_factory=dict)  # cell id -> state
    changed: list[str] = field(default_factory=list)  # cells whose file this sweep rewrote
    interrupted: bool = False
    jobs: int = 1
    wall: float = 0.0  # seconds from the first cell started to the last one finished
    cell_seconds: float = 0.0  # the cells' own run times, summed

    @property
    def efficiency(self) -> float | None:
        """Wall time over the ideal one, the cells' own times spread over the workers: 1.0
        wastes nothing on scheduling (issue 16's target is at most 1.15)."""
        ideal = self.cell_seconds / self.jobs
        return self.wall / ideal if ideal > 0 else None

    @property
    def failed(self) -> dict[str, str]:
        return {k: v for k, v in self.done.items() if v != "ok"}


class _Lock:
    """An exclusive, non-blocking claim on one cell, released when the process dies."""

    def __init__(self, folder: Path, cell_id: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / f"{cell_id}.lock", os.O_CREAT | os.O_RDWR, 0o644)

    def acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            os.close(self.fd)
            return False

    def release(self) -> None:
        os.close(self.fd)


def _existing(path: Path) -> results.StoredResult | None:
    try:
        return results.load_stored(path)  # the evidence is not needed to tell what is current
    except results.ResultError:
        return None  # corrupt or stale: run the cell again and replace the file


def sweep(
    cells: Sequence[Mapping[str, Any]],
    results_dir: Path = results.RESULTS_DIR,
    jobs: int = os.cpu_count() or 2,
    force: bool = False,
    out: TextIO = sys.stderr,
    discard_unmeasured: bool = False,
) -> Summary:
    """Run ``cells`` into ``results_dir``; evidence sources a cell's run does not re-measure
    (wire) are kept unless ``discard_unmeasured``. The run record is updated when anything
    in the folder changed."""
    _stopping.clear()
    began = datetime.now(timezone.utc)
    summary = Summary(total=len(cells), jobs=jobs)
    todo = []
    for cell in cells:
        if not force and is_current(_existing(results_dir / f"{cell['id']}.json"), cell):
            summary.skipped += 1
        else:
            todo.append(cell)
    print(f"{len(cells)} cells: {summary.skipped} current, {len(todo)} to run on {jobs} "
          f"worker(s)", file=out, flush=True)
    if not todo:
        return summary
    locks = runner.WORK_DIR / "locks"
    started = time.monotonic()
    pending: dict[Future, Mapping[str, Any]] = {}
    queue = list(todo)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while queue or pending:
                while queue and len(pending) < jobs:
                    cell = queue.pop(0)
                    pending[pool.submit(_run_locked, cell, results_dir, locks, force,
                                        discard_unmeasured)] = cell
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    cell = pending.pop(fut)
                    state, changed, seconds = fut.result()
                    summary.cell_seconds += seconds
                    if changed:
                        summary.changed.append(cell["id"])
                    if state == BUSY:
                        summary.busy.append(cell["id"])
                    elif state == CURRENT:
                        summary.skipped += 1
                    elif state == INTERRUPTED:
                        raise KeyboardInterrupt
                    else:
                        summary.done[cell["id"]] = state
                    _progress(out, summary, len(todo), cell["id"], state, started)
                    summary.wall = time.monotonic() - started
        except KeyboardInterrupt:
            _stopping.set()
            summary.interrupted = True
            queue.clear()
            for fut in pending:
                fut.cancel()
            # One line, printed by the CLI: the finished cells are kept, the rest re-run.
            raise KeyboardInterrupt(
                f"interrupted: {len(summary.done)} finished; run again to resume") from None
    if summary.changed:  # a run that changed no byte leaves the folder, record and all, alone
        # Evidence that no result names any more (a behaviour that changed) goes, so the store
        # holds exactly what the results cite; then the run record, if the content changed.
        results.collect_garbage(results_dir)
        snapshot.record_run(results_dir, began, len(summary.done), runner.uv_version())
    return summary


BUSY, CURRENT, INTERRUPTED = "busy", "current", "interrupted"

#: Set on Ctrl-C: a cell whose run was cut short must not be written as if it had failed.
_stopping = threading.Event()
def _run_locked(cell: Mapping[str, Any], results_dir: Path, locks: Path, force: bool,
                discard_unmeasured: bool) -> tuple[str, bool, float]:
    """The cell's state (or BUSY, CURRENT, INTERRUPTED), whether its file changed, and the
    seconds the cell took on its own (run and write: what a worker cannot share)."""
    lock = _Lock(locks, cell["id"])
    if not lock.acquire():
        return BUSY, False, 0.0  # another sweep is running this cell right now
    started = time.monotonic()
    try:
        # Another sweep may have finished it between our first look and the lock.
        if not force and is_current(_existing(results_dir / f"{cell['id']}.json"), cell):
            return CURRENT, False, 0.0
        try:
            result = runner.run_cell(cell)
        except runner.Interrupted:
            return INTERRUPTED, False, 0.0
        if _stopping.is_set():
            return INTERRUPTED, False, 0.0  # its processes got the Ctrl-C too: not a finding
        changed = results.write(results_dir / f"{cell['id']}.json", result,
                                current_methods=runner.current_methods(),
                                discard_unmeasured=discard_unmeasured)
        return result["state"], changed, time.monotonic() - started
    finally:
        lock.release()


def _progress(out: TextIO, s: Summary, todo: int, cell_id: str, state: str,
              started: float) -> None:
    n = len(s.done) + len(s.busy) + s.skipped - s.total + todo
    elapsed = time.monotonic() - started
    eta = elapsed / n * (todo - n) if n else 0
    print(
        f"[{n:>4}/{todo}] {cell_id:<34} {state:<14} "
        f"failed so far {len(s.failed)}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}",
        file=out, flush=True,
    )


def _clock(seconds: float) -> str:
    m, sec = divmod(int(seconds), 60)
    return f"{m}:{sec:02d}"
