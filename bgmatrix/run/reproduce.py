"""``bgmatrix reproduce``: do the committed results still hold on this machine?

Re-runs the headline cells (tag ``headline``: one per behaviour era) into a scratch folder —
never results/ — and compares each with its committed result: the same cell state, the same
clause verdicts and labels, the same test observations (provenance, i.e. when, where and with
which tools, is not compared). Prints

    27 of 27 headline cells reproduce the committed results

and one line per cell that differs, naming what differs. A cell this machine cannot run (no
such interpreter: they are found, never downloaded) is listed as not checked, not counted as
reproduced. Exit 0 when every cell that ran reproduces, 1 when any differs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bgmatrix import results, spec
from bgmatrix.errors import UsageError
from bgmatrix.plan import store
from bgmatrix.run import runner, sweep

NOT_RUN = ("no-interpreter",)  # cell states that say nothing about the release


def differences(committed: results.Result, fresh: results.Result) -> list[str]:
    """What differs between two expanded results, as short phrases (empty: they agree)."""
    if committed["state"] != fresh["state"]:
        return [f"state {committed['state']} -> {fresh['state']}"]
    found = []
    old, new = committed["clauses"], fresh["clauses"]
    changed = sorted((c for c in set(old) | set(new)
                      if _outcome(old.get(c)) != _outcome(new.get(c))), key=spec.clause_order)
    for cid in changed:
        found.append(f"{cid} {_outcome(old.get(cid))} -> {_outcome(new.get(cid))}")
    old_tests = {t["test"]: t for t in committed.get("tests") or []}
    new_tests = {t["test"]: t for t in fresh.get("tests") or []}
    tests = sorted(t for t in set(old_tests) | set(new_tests)
                   if old_tests.get(t) != new_tests.get(t))
    if tests:
        shown = ", ".join(tests[:3]) + (f" and {len(tests) - 3} more" if len(tests) > 3 else "")
        found.append(f"{len(tests)} test observation(s) differ: {shown}")
    return found


def _outcome(verdict: results.ClauseOutcome | None) -> str:
    return f"{verdict['verdict']}·{verdict['label']}" if verdict else "absent"


def reproduce(cells: Sequence[Mapping[str, Any]], committed_dir: Path, scratch: Path, jobs: int,
              ) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """Run ``cells`` into ``scratch``; return (reproduced ids, differing id -> what, not run
    id -> why)."""
    sweep.sweep(cells, scratch, jobs=jobs, force=True)
    same: list[str] = []
    differ: dict[str, list[str]] = {}
    not_run: dict[str, str] = {}
    for cell in cells:
        name = f"{cell['id']}.json"
        fresh = results.load(scratch / name)
        if fresh["state"] in NOT_RUN:
            not_run[cell["id"]] = (fresh.get("message") or fresh["state"]).splitlines()[0]
            continue
        if not (committed_dir / name).exists():
            differ[cell["id"]] = [f"no committed result in {committed_dir}"]
            continue
        found = differences(results.load(committed_dir / name), fresh)
        if found:
            differ[cell["id"]] = found
        else:
            same.append(cell["id"])
    return same, differ, not_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--tag", default="headline",
                   help="which cells (default: headline, one per behaviour era)")
    p.add_argument("--results", type=Path, default=results.RESULTS_DIR,
                   help="the committed results to compare with (default: results/)")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="run into DIR and keep it (default: a scratch folder, removed after)")
    p.add_argument("-j", "--jobs", type=int, default=2)


def command(args: argparse.Namespace) -> int:
    cells = store.select(store.load_cells(), [], [args.tag])
    if args.keep is not None and args.keep.resolve() == Path(args.results).resolve():
        raise UsageError("--keep must not be the results folder being compared with")
    runner.WORK_DIR.mkdir(parents=True, exist_ok=True)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="reproduce-", dir=runner.WORK_DIR))
    try:
        same, differ, not_run = reproduce(cells, Path(args.results), scratch, args.jobs)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    checked = len(cells) - len(not_run)
    tag = f"{args.tag} " if args.tag != "headline" else "headline "
    print(f"{len(same)} of {checked} {tag}cells reproduce the committed results"
          + (f" ({len(not_run)} of {len(cells)} not checked: see below)" if not_run else ""))
    for cid, found in differ.items():
        print(f"  differs: {cid}: " + "; ".join(found))
    for cid, why in not_run.items():
        print(f"  not checked: {cid}: {why}")
    return 1 if differ else 0
