"""Shards: the matrix split across machines, and the merge that refuses an incomplete result.

CI runs the cells on several runners at once; each writes its results into a folder of its
own, and one merge step checks them all before anything reaches results/. The same split runs
locally, so a failing shard can be reproduced on a laptop:

    bgmatrix shard run K N --out DIR      shard K of N into DIR (tag shard-K when N is the
                                          plan's shard count, else round-robin)
    bgmatrix shard merge DIR... --into results/ [--tag T] [--cell ID]
    nox -l --json -t fastapi starlette | bgmatrix shard matrix
                                          the GitHub Actions matrix, one job a shard

The merge publishes all or nothing: a planned cell missing from every folder, an invalid file,
or one cell in two folders is one line each on stderr, exit 2, and results/ is left untouched.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bgmatrix import results, snapshot
from bgmatrix.errors import BgmatrixError
from bgmatrix.plan import store
from bgmatrix.run import runner

#: GitHub Actions refuses a matrix of more than 256 jobs.
MAX_JOBS = 256

#: The interpreter the host tools run on (pyproject's requires-python floor). setup-python makes
#: the last version it installs the default ``python``, so the matrix lists it last.
HOST_PYTHON = "3.11"

_SHARD_TAG = re.compile(r"^shard-(\d+)$")
_PYTHON_TAG = re.compile(r"^py(3\.\d+)$")


class ShardError(BgmatrixError):
    """A shard cannot be chosen or a listing cannot be grouped (one-line message)."""


# ---------------------------------------------------------------------------- choosing


def shard_of(cell: Mapping[str, Any]) -> int | None:
    """K of the cell's ``shard-K`` tag, or None for a cell (or session) without one."""
    for tag in cell.get("tags") or ():
        match = _SHARD_TAG.match(tag)
        if match:
            return int(match.group(1))
    return None


def shard_count(cells: Sequence[Mapping[str, Any]]) -> int:
    """How many shards the plan's tags split the cells into (0 when untagged)."""
    return max((shard_of(c) or 0 for c in cells), default=0)


def cells_for_shard(cells: Sequence[store.Cell], k: int, n: int) -> list[store.Cell]:
    """The cells of shard ``k`` (1-based) of ``n``, in plan order.

    With the plan's own shard count the shard-K tags decide, so ``run K N`` locally runs
    exactly what CI's job shard-K runs; any other N deals the cells round-robin.
    """
    if n < 1 or not 1 <= k <= n:
        raise ShardError(f"shard {k} of {n} does not exist: K must be 1..N")
    if n == shard_count(cells):
        return [c for c in cells if shard_of(c) == k]
    return [c for i, c in enumerate(cells) if i % n == k - 1]


def pythons_of(cells: Sequence[dict]) -> list[str]:
    """Interpreters the cells need (from their py3.X tags), oldest first, then the host's."""
    needed = {m.group(1) for c in cells for t in c.get("tags") or () if (m := _PYTHON_TAG.match(t))}
    needed.discard(HOST_PYTHON)
    return sorted(needed, key=lambda v: tuple(int(p) for p in v.split("."))) + [HOST_PYTHON]


def actions_matrix(listing: Sequence[dict]) -> list[dict]:
    """Group ``nox -l --json`` sessions into one job per shard tag, for ``matrix.include``.

    Sessions without a shard tag (headline, report, ...) are not cells and are left out. Each
    job carries its cell ids (space-separated, ready for the command line) and the
    interpreters to install (newline-separated, as setup-python's input wants them).
    """
    groups: dict[int, list[dict]] = {}
    for session in listing:
        k = shard_of(session)
        if k is not None:
            groups.setdefault(k, []).append(session)
    if not groups:
        raise ShardError("the listing holds no cell session (no shard-K tag): nothing to run")
    if len(groups) > MAX_JOBS:
        raise ShardError(
            f"{len(groups)} shards exceed GitHub's {MAX_JOBS}-job matrix: lower plan.NSHARDS"
        )
    return [
        {
            "shard": f"shard-{k}",
            "count": len(groups[k]),
            "cells": " ".join(s["name"] for s in groups[k]),
            "pythons": "\n".join(pythons_of(groups[k])),
        }
        for k in sorted(groups)
    ]


# ---------------------------------------------------------------------------- merging


class MergeRefused(BgmatrixError):
    """The shard folders cannot be published; ``problems`` has one line each."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


def merge_problems(folders: Sequence[Path], expected: Sequence[str]) -> tuple[dict, list[str]]:
    """Validate every result file in ``folders`` against the ``expected`` cell ids.

    Returns (cell id -> loaded result, one line per problem). Nothing is written here, so a
    caller that finds problems can refuse without having touched anything.
    """
    wanted = set(expected)
    found: dict[str, results.Result] = {}
    where: dict[str, Path] = {}
    problems: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            problems.append(f"{folder}: no such folder")
            continue
        for path in results.result_paths(folder):  # not temporary files, not the run record
            try:
                data = results.load(path)
            except results.ResultError as exc:
                problems.append(f"invalid: {exc}")
                continue
            cell_id = data["cell"]["id"]
            if cell_id in where:
                problems.append(f"duplicate: {cell_id} is in both {where[cell_id]} and {folder}")
                continue
            where[cell_id] = folder
            if cell_id not in wanted:
                problems.append(f"unexpected: {path}: {cell_id} is not among the cells expected "
                                "(the plan's, or those --tag/--cell chose)")
                continue
            found[cell_id] = data
    for cell_id in expected:
        if cell_id not in where:
            problems.append(f"missing: {cell_id} is planned but in no folder")
    return found, problems


def merge(folders: Sequence[Path], into: Path, expected: Sequence[str]) -> dict[str, int]:
    """Copy every validated result into ``into``; count files per outcome.

    Raises `MergeRefused`, having written nothing, when any file or cell is wrong. Returns
    ``{"written": n, "unchanged": n}`` plus, per cell state other than ok, how many cells
    have it.
    """
    found, problems = merge_problems(folders, expected)
    if problems:
        raise MergeRefused(problems)
    counts = {"written": 0, "unchanged": 0}
    began = datetime.now(timezone.utc)
    methods = runner.current_methods()
    for cell_id in sorted(found):
        # Through the store: evidence lands in into/evidence, and a source the shard did not
        # measure (wire) is kept from the file it replaces.
        if results.write(into / f"{cell_id}.json", found[cell_id], current_methods=methods):
            counts["written"] += 1
        else:
            counts["unchanged"] += 1
        state = found[cell_id]["state"]
        if state != "ok":
            counts[state] = counts.get(state, 0) + 1
    if counts["written"]:
        results.collect_garbage(into)
        snapshot.record_run(into, began, counts["written"], runner.uv_version())
    return counts


# ---------------------------------------------------------------------------- command


def cmd_run(args: argparse.Namespace) -> int:
    from bgmatrix.run import sweep  # imported here: merge and matrix need no cell runner

    cells = cells_for_shard(store.load_cells(Path(args.plan)), args.k, args.n)
    if not cells:
        raise ShardError(f"shard {args.k} of {args.n} has no cells")
    summary = sweep.sweep(cells, Path(args.out), jobs=args.jobs, force=args.force)
    print(f"shard {args.k}/{args.n}: {len(cells)} cells into {args.out}: {len(summary.done)} run,"
          f" {summary.skipped} current, {len(summary.busy)} busy, {len(summary.failed)} "
          "without verdicts: "
          + (", ".join(f"{k} ({v})" for k, v in sorted(summary.failed.items())) or "none"))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    planned = store.load_cells(Path(args.plan))
    # Empty values count as absent, so a workflow can pass its optional inputs unconditionally.
    cell_ids, tags = [c for c in args.cell if c], [t for t in args.tag if t]
    chosen = store.select(planned, cell_ids, tags, everything=not (cell_ids or tags))
    into = Path(args.into)
    try:
        counts = merge([Path(f) for f in args.folders], into, [c["id"] for c in chosen])
    except MergeRefused as refused:  # the CLI prints one line per problem, then exits 2
        raise MergeRefused([*refused.problems, f"refused ({len(refused.problems)} problem(s)); "
                            f"nothing written to {into}"]) from None
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())
                       if state not in ("written", "unchanged"))
    print(f"merged {len(chosen)} cells from {len(args.folders)} folder(s) into {into}: "
          f"{counts['written']} written, {counts['unchanged']} unchanged"
          + (f"; without verdicts: {states}" if states else ""))
    if counts.get("no-interpreter"):
        # Not refused (a laptop may lack an old CPython), but on CI every interpreter a shard
        # needs is installed: this means a broken runner, whose results replace measured ones.
        print(f"bgmatrix merge: warning: {counts['no-interpreter']} cell(s) found no "
              "interpreter", file=sys.stderr)
    print(f"snapshot {snapshot.snapshot_id(into)}")
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.listing == "-" else Path(args.listing).read_text("utf-8")
    except OSError as exc:
        raise ShardError(f"{args.listing}: cannot be read ({exc.strerror or exc})") from None
    try:
        listing = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShardError(f"{args.listing}: not the JSON of `nox -l --json` ({exc})") from None
    if not isinstance(listing, list):
        raise ShardError(f"{args.listing}: not the JSON list of `nox -l --json`")
    jobs = actions_matrix(listing)
    print(json.dumps(jobs, separators=(",", ":")))
    print(f"{len(jobs)} shard job(s), {sum(j['count'] for j in jobs)} cells", file=sys.stderr)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--plan", default=str(store.PLAN_PATH), help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="step", required=True, metavar="{run,merge,matrix}")
    run = sub.add_parser("run", help="run shard K of N into a folder of its own")
    run.add_argument("k", type=int, metavar="K")
    run.add_argument("n", type=int, metavar="N")
    run.add_argument("--out", required=True, help="folder for this shard's result files")
    run.add_argument("-j", "--jobs", type=int, default=2)
    run.add_argument("--force", action="store_true", help="re-run cells that are current")
    run.set_defaults(step_func=cmd_run)
    merge_p = sub.add_parser("merge", help="check shard folders and copy them into results/")
    merge_p.add_argument("folders", nargs="+", metavar="DIR")
    merge_p.add_argument("--into", required=True, help="the results folder to publish into")
    merge_p.add_argument("-t", "--tag", action="append", default=[],
                         help="only cells with this tag were run (as `run --tag`)")
    merge_p.add_argument("--cell", action="append", default=[],
                         help="only this cell was run (repeatable)")
    merge_p.set_defaults(step_func=cmd_merge)
    matrix = sub.add_parser("matrix", help="group `nox -l --json` into shard jobs (JSON)")
    matrix.add_argument("listing", nargs="?", default="-", help="its output (default: stdin)")
    matrix.set_defaults(step_func=cmd_matrix)


def command(args: argparse.Namespace) -> int:
    """``bgmatrix shard run|merge|matrix``."""
    return int(args.step_func(args))
