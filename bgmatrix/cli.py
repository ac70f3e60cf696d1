"""``bgmatrix <verb>`` (also ``python -m bgmatrix <verb>``): every command of the project.

    bgmatrix --help              the verbs, one line each
    bgmatrix <verb> --help       a verb's options

Each verb lives in the module that does the work; that module exposes ``add_arguments(parser)``
and ``command(args) -> int``, and only the chosen verb's module is imported. Errors: every
:class:`bgmatrix.errors.BgmatrixError` becomes one line on stderr (one per problem) and exit
code 2, here and nowhere else; Ctrl-C anywhere is one line and exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Sequence

from bgmatrix.errors import (
    INTERRUPTED,
    USAGE_ERROR,
    BgmatrixError,
    Interrupted,
    UsageError,
    problem_lines,
)

if TYPE_CHECKING:  # the verbs import their modules lazily: `bgmatrix --help` stays fast
    from bgmatrix.results import Result

#: verb -> (module with add_arguments/command, one-line help). In the order --help lists them.
VERBS: dict[str, tuple[str, str]] = {
    "run": ("bgmatrix.cli", "run cells into results/ (by id, fastapi==X, starlette==X, --tag)"),
    "show": ("bgmatrix.cli", "print one cell's state and verdicts, with the reason for each n/a"),
    "reproduce": ("bgmatrix.run.reproduce",
                  "re-run the headline cells in a scratch folder; compare with results/"),
    "plan": ("bgmatrix.plan.planner", "refresh matrix/plan.json from the package index"),
    "report": ("bgmatrix.site.build", "generate the site from spec/ and results/, build it"),
    "cite": ("bgmatrix.site.cite", "print a GitHub-ready citation of a clause (or of one cell)"),
    "brief": ("bgmatrix.site.brief",
              "print the one-page decision brief for FastAPI #11215, as Markdown to paste"),
    "candidates": ("bgmatrix.run.candidates",
                   "run the candidate resolutions (or any FastAPI build) through the suite"),
    "upstream": ("bgmatrix.run.upstream",
                 "check the upstream-ready PR: FastAPI's full suite with coverage of the lines "
                 "it adds"),
    "compat": ("bgmatrix.run.compat", "run the compatibility apps on 0.165.0 and every candidate"),
    "shard": ("bgmatrix.run.shards", "CI's split: run shard K of N, merge shards, list the jobs"),
    "watch": ("bgmatrix.run.watch",
              "find releases newer than the plan, run their cells, summarise what changed"),
    "snapshot": ("bgmatrix.snapshot", "print the snapshot id of a results folder"),
    "attribute": ("bgmatrix.run.attribute",
                  "find why labels flip between adjacent releases: re-run with one dependency "
                  "pinned at a time -> matrix/attribution.json"),
    "deploy": ("bgmatrix.run.deploy", "measure the Deployment chapter per server and adapter"),
    "probe": ("bgmatrix.run.probe", "measure how each server release delivers ASGI, with no "
              "framework -> matrix/server-probes.json"),
    "fidelity": ("bgmatrix.run.fidelity",
                 "run each line's own background and middleware tests (from its sdist) in one "
                 "cell per line -> matrix/fidelity.json"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (`{self.prog} --help` lists the options)")


def parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command line; only ``verb``'s module is imported to fill in its options."""
    p = _Parser(prog="bgmatrix", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Every error is one line on stderr and exit code 2; Ctrl-C exits 130.")
    sub = p.add_subparsers(dest="verb", metavar="<verb>", required=True,
                           parser_class=_Parser)
    for name, (module, help_) in VERBS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if name == verb:
            target = importlib.import_module(module)
            own = module == __name__  # run and show live here: add_run_arguments, run_command
            add = getattr(target, f"add_{name}_arguments" if own else "add_arguments")
            add(sp)
            sp.set_defaults(func=getattr(target, f"{name}_command" if own else "command"))
    return p


def _verb_of(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in VERBS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = _verb_of(argv)
    prog = f"bgmatrix {verb}" if verb else "bgmatrix"
    try:
        args = parser(verb).parse_args(argv)
        return int(args.func(args))
    except (KeyboardInterrupt, Interrupted) as exc:
        message = str(exc) if isinstance(exc, KeyboardInterrupt) and str(exc) else "interrupted"
        print(f"{prog}: {message}", file=sys.stderr, flush=True)
        return INTERRUPTED
    except BgmatrixError as exc:
        for line in problem_lines(exc):
            print(f"{prog}: {line}", file=sys.stderr)
        return USAGE_ERROR


# ---------------------------------------------------------------------------- run, show


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    from bgmatrix import results

    p.add_argument("targets", nargs="*", metavar="CELL|fastapi==X|starlette==X")
    p.add_argument("-t", "--tag", action="append", default=[], help="cells with this tag")
    p.add_argument("--all", action="store_true", help="every planned cell")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--force", action="store_true", help="re-run cells that are current")
    p.add_argument("--results", default=str(results.RESULTS_DIR))
    p.add_argument("--discard-unmeasured-evidence", action="store_true",
                   help="drop evidence sources this run does not re-measure (e.g. wire "
                        "evidence on a run without wire mode); by default they are kept")


def run_command(args: argparse.Namespace) -> int:
    from bgmatrix import results
    from bgmatrix.plan import store
    from bgmatrix.run import sweep  # imported here: `show` and errors stay fast

    cells = store.select(store.load_cells(), args.targets, args.tag, args.all)
    if not cells:
        raise UsageError("name a cell, fastapi==X, starlette==X, --tag T or --all")
    folder = Path(args.results)
    summary = sweep.sweep(cells, folder, jobs=args.jobs, force=args.force,
                          discard_unmeasured=args.discard_unmeasured_evidence)
    if len(cells) <= 3:
        for cell in cells:
            if cell["id"] in summary.busy:
                print(f"{cell['id']}: being run by another sweep")
            else:
                print(describe(results.load(folder / f"{cell['id']}.json")))
    print(f"{len(summary.done)} run, {summary.skipped} current, {len(summary.busy)} busy, "
          f"{len(summary.failed)} without verdicts: "
          + (", ".join(f"{k} ({v})" for k, v in sorted(summary.failed.items())) or "none"))
    if summary.efficiency is not None:
        print(f"time: {summary.wall:.0f} s wall for cells that took {summary.cell_seconds:.0f} s "
              f"on their own, on {summary.jobs} worker(s): {summary.efficiency:.2f}× the ideal "
              f"{summary.cell_seconds / summary.jobs:.0f} s")
    return 0


def describe(result: Result) -> str:
    """A cell's verdicts as a reader of h2spec would expect: clause, verdict, what was seen,
    and for n/a the reason the release lacks the feature."""
    cell = result["cell"]
    python = (result.get("provenance") or {}).get("python") or cell["python"]
    head = (f"{cell['id']}: {result['state']} — fastapi {cell['fastapi']}, starlette "
            f"{cell['starlette']}, python {python}")
    lines = [head]
    if result["message"]:
        lines.append("  " + result["message"].splitlines()[-1][:300])
    from bgmatrix.spec import clause_order

    for cid in sorted(result["clauses"], key=clause_order):
        v = result["clauses"][cid]
        seen = v.get("reason") or v["label"] if v["verdict"] == "n/a" else v["label"]
        lines.append(f"  {cid:<10} {v['verdict']:<14} {seen[:90]}")
    return "\n".join(lines)


def add_show_arguments(p: argparse.ArgumentParser) -> None:
    from bgmatrix import results

    p.add_argument("cell", help="a cell id, e.g. fa-0.106.0_st-0.27.0_py3.8")
    p.add_argument("--results", default=str(results.RESULTS_DIR))
    p.add_argument("--evidence", nargs="?", const="", metavar="TEST",
                   help="print every test's complete record as JSON (its observations and "
                        "event logs, uncut), or only the tests whose name contains TEST")


def show_command(args: argparse.Namespace) -> int:
    from bgmatrix import results

    path = Path(args.results) / f"{args.cell}.json"
    if not path.exists():
        raise UsageError(f"no result for {args.cell!r} in {args.results}")
    result = results.load(path)
    if args.evidence is None:
        print(describe(result))
        return 0
    tests = [t for t in result["tests"] if args.evidence in t["test"]]
    if not tests:
        raise UsageError(f"{args.cell}: no test whose name contains {args.evidence!r}")
    # ASCII escapes: the records hold whatever text the application produced.
    print(json.dumps(tests, indent=1, sort_keys=True, ensure_ascii=True))
    return 0
