"""``bgmatrix`` / ``python -m bgmatrix``: run cells, sweep the matrix, show a result.

Every user error is one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bgmatrix import results
from bgmatrix.plan import store
from bgmatrix.spec import SpecError

USAGE_ERROR = 2


class UsageError(Exception):
    pass


def select(
    cells: list[dict], targets: list[str], tags: list[str], everything: bool = False
) -> list[dict]:
    """Cells named by id, by ``fastapi==X`` / ``starlette==X``, or carrying every tag."""
    chosen: list[dict] = list(cells) if everything else []
    for target in targets:
        name, sep, version = target.partition("==")
        if sep and name in ("fastapi", "starlette"):
            hits = [c for c in cells if c.get(name) == version and
                    (name == "fastapi" or c["kind"] == "starlette")]
            if not hits:
                known = [c[name] for c in cells if c.get(name)]
                span = f"{known[0]} … {known[-1]}" if known else "none"
                raise UsageError(
                    f"{name} {version} is not a planned release (planned: {span}); "
                    "`nox -s plan` refreshes the plan from the package index"
                )
        else:
            hits = [c for c in cells if c["id"] == target]
            if not hits:
                raise UsageError(f"unknown cell {target!r}; `nox -l` lists them")
        chosen.extend(h for h in hits if h not in chosen)
    for tag in tags:
        if not any(tag in c["tags"] for c in cells):
            raise UsageError(f"no cell is tagged {tag!r}")
    if tags:
        pool = chosen or cells
        chosen = [c for c in pool if all(t in c["tags"] for t in tags)]
    return chosen


def cmd_run(args: argparse.Namespace) -> int:
    from bgmatrix.run import sweep  # imported here: `show` and errors stay fast

    cells = select(store.load_cells(), args.targets, args.tag, args.all)
    if not cells:
        raise UsageError("name a cell, fastapi==X, starlette==X, --tag T or --all")
    folder = Path(args.results)
    summary = sweep.sweep(cells, folder, jobs=args.jobs, force=args.force)
    if len(cells) <= 3:
        for cell in cells:
            if cell["id"] in summary.busy:
                print(f"{cell['id']}: being run by another sweep")
            else:
                print(describe(results.load(folder / f"{cell['id']}.json")))
    print(f"{len(summary.done)} run, {summary.skipped} current, {len(summary.busy)} busy, "
          f"{len(summary.failed)} without verdicts: "
          + (", ".join(f"{k} ({v})" for k, v in sorted(summary.failed.items())) or "none"))
    return 0


def describe(result: dict) -> str:
    """A cell's verdicts as a reader of h2spec would expect: clause, verdict, what was seen."""
    cell = result["cell"]
    head = (f"{cell['id']}: {result['state']} — fastapi {cell['fastapi']}, starlette "
            f"{cell['starlette']}, python {result['provenance'].get('python') or cell['python']}")
    lines = [head]
    if result["message"]:
        lines.append("  " + result["message"].splitlines()[-1][:300])
    for cid, v in result["clauses"].items():
        lines.append(f"  {cid:<10} {v['verdict']:<14} {v['label'][:70]}")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.results) / f"{args.cell}.json"
    if not path.exists():
        raise UsageError(f"no result for {args.cell!r} in {args.results}")
    print(describe(results.load(path)))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bgmatrix.plan import planner

    return planner.main(args.rest)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bgmatrix", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run cells (by id, fastapi==X, starlette==X or --tag)")
    run.add_argument("targets", nargs="*")
    run.add_argument("-t", "--tag", action="append", default=[], help="cells with this tag")
    run.add_argument("--all", action="store_true", help="every planned cell")
    run.add_argument("-j", "--jobs", type=int, default=2)
    run.add_argument("--force", action="store_true", help="re-run cells that are current")
    run.add_argument("--results", default=str(results.RESULTS_DIR))
    run.set_defaults(func=cmd_run)
    show = sub.add_parser("show", help="print one cell's verdicts")
    show.add_argument("cell")
    show.add_argument("--results", default=str(results.RESULTS_DIR))
    show.set_defaults(func=cmd_show)
    plan = sub.add_parser("plan", help="refresh matrix/plan.json from the package index")
    plan.add_argument("rest", nargs=argparse.REMAINDER)
    plan.set_defaults(func=cmd_plan)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:  # the planner owns its options (--out ...)
        from bgmatrix.plan import planner

        return planner.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, store.PlanFileError, results.ResultError, SpecError) as exc:
        print(f"bgmatrix: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
