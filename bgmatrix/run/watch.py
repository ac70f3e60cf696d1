"""Release watch: new FastAPI or Starlette releases, their cells run, and what changed.

    bgmatrix watch [--plan matrix/plan.json] [--results results/] [-j N] [--summary FILE]

Asks the package index for releases the plan does not have yet. With none, it stops there
(two small requests, a few seconds). Otherwise it rebuilds the plan with them, runs only the
cells that are new, and prints a Markdown summary, ready to paste into an issue, of every
clause whose verdict or label differs from the previous release's cell:

- a new FastAPI release's cell against the previous FastAPI release's cell with the same
  Starlette bound (lowest, highest, only) and interpreter;
- a new Starlette release's cell against the previous Starlette release's cell;
- a FastAPI cell that is new because a new Starlette moved its bound, against the cell of the
  same FastAPI release it replaces.

Exit 0: nothing new, or the new releases behave like their predecessors. Exit 1: behaviour
changed. Exit 2: an error, as one line (index unreachable, unreadable plan or result).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, TextIO

from packaging.version import Version

from bgmatrix import results, spec
from bgmatrix.plan import planner, store
from bgmatrix.plan.index import (
    Release,
    fetch_releases,
    list_releases,
    make_client,
)

CHANGED = 1

#: A cell with this Starlette bound is compared with the previous release's cell of the first
#: bound listed that exists: a release pinning one Starlette ("only") is its own lowest and
#: highest, so it stands in for either, and either stands in for it.
BOUND_MATCH: dict[Optional[str], tuple[Optional[str], ...]] = {
    "only": ("only", "highest", "lowest"),
    "lowest": ("lowest", "only"),
    "highest": ("highest", "only"),
    None: (None,),
}


class IndexSource(Protocol):
    """What the watch asks the package index; tests pass a fake."""

    def versions(self) -> tuple[list[Release], list[Release]]:
        """(FastAPI, Starlette) releases without Requires-Dist: cheap, for the first look."""
        ...

    def releases(self) -> tuple[list[Release], list[Release]]:
        """(FastAPI, Starlette) releases as the planner needs them (`fetch_releases`)."""
        ...


class LiveIndex:
    """The package index at the client's default endpoint."""

    def versions(self) -> tuple[list[Release], list[Release]]:
        # Two project pages only: reading every FastAPI wheel's metadata takes most of a
        # minute, and on most weeks there is nothing new to read it for.
        with make_client() as client:
            return list_releases(client, "fastapi"), list_releases(client, "starlette")

    def releases(self) -> tuple[list[Release], list[Release]]:
        with make_client() as client:
            return fetch_releases(client)


# ---------------------------------------------------------------------------- what is new


def new_versions(
    plan: dict, fastapi: Sequence[Release], starlette: Sequence[Release]
) -> tuple[list[str], list[str]]:
    """Final, unyanked versions at or above the planner's floors that the plan lacks."""

    def fresh(releases: Sequence[Release], planned: list[dict], floor: str) -> list[str]:
        have = {Version(e["version"]) for e in planned}
        found = {
            Version(r.version)
            for r in releases
            if not r.yanked
            and not Version(r.version).is_prerelease
            and not Version(r.version).is_devrelease
            and Version(r.version) >= Version(floor)
        }
        return [str(v) for v in sorted(found - have)]

    return (
        fresh(fastapi, plan["fastapi"], planner.FASTAPI_FLOOR),
        fresh(starlette, plan["starlette"], planner.STARLETTE_FLOOR),
    )


def previous_cell(cell: dict, old: dict, new: dict) -> Optional[dict]:
    """The cell whose behaviour ``cell`` (new in ``new``) is compared with, or None."""
    pool = {c["id"]: c for c in old["cells"]}
    pool.update((c["id"], c) for c in new["cells"])
    if cell["kind"] == "starlette":
        version = Version(cell["starlette"])
        older = [c for c in pool.values() if c["kind"] == "starlette"
                 and Version(c["starlette"]) < version]
        if not older:
            return None
        newest = max(Version(c["starlette"]) for c in older)
        return _closest(cell, [c for c in older if Version(c["starlette"]) == newest])
    planned_before = {Version(e["version"]) for e in old["fastapi"]}
    version = Version(cell["fastapi"])
    if version in planned_before:
        # An old release with a new cell: a new Starlette moved its bound. The cells of the
        # same release in the old plan are what this one replaces.
        candidates = [c for c in old["cells"] if c["kind"] == "fastapi"
                      and Version(c["fastapi"]) == version and c["id"] != cell["id"]]
    else:
        older = [Version(e["version"]) for e in new["fastapi"] if Version(e["version"]) < version]
        if not older:
            return None
        previous = max(older)
        candidates = [c for c in pool.values() if c["kind"] == "fastapi"
                      and Version(c["fastapi"]) == previous]
    for bound in BOUND_MATCH.get(cell.get("starlette_bound"), (None,)):
        same_bound = [c for c in candidates if c.get("starlette_bound") == bound]
        if same_bound:
            return _closest(cell, same_bound)
    return None


def _closest(cell: dict, candidates: list[dict]) -> dict:
    """The candidate on the same interpreter, else the one on the oldest."""
    return min(candidates, key=lambda c: (c["python"] != cell["python"], Version(c["python"])))


# ---------------------------------------------------------------------------- comparing


@dataclass
class Comparison:
    """One new cell against its predecessor: the rows that differ, or why there are none."""

    cell: dict
    previous: Optional[dict]
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (what, before, now)
    skipped: Optional[str] = None  # why the cells could not be compared
    caveat: Optional[str] = None  # something a reader must know to trust the rows
    same: int = 0  # clauses with the same verdict and label

    @property
    def changed(self) -> bool:
        return bool(self.rows)


def compare(cell: dict, previous: Optional[dict], results_dir: Path) -> Comparison:
    """Compare the results of ``cell`` and ``previous`` clause by clause."""
    comparison = Comparison(cell, previous)
    now = _result(results_dir, cell["id"])
    if now is None:
        comparison.skipped = "it has no result (another sweep held it, or the run stopped)"
        return comparison
    if previous is None:
        comparison.skipped = (
            "no earlier release has a cell to compare it with (same kind and Starlette bound)")
        return comparison
    before = _result(results_dir, previous["id"])
    if before is None:
        comparison.skipped = f"the previous cell `{previous['id']}` has no result in results/"
        return comparison
    was, got = before["provenance"], now["provenance"]
    if (was["suite_hash"], was["spec_version"]) != (got["suite_hash"], got["spec_version"]):
        comparison.caveat = (
            f"the previous result was measured with suite `{was['suite_hash']}` (spec "
            f"{was['spec_version']}), this one with `{got['suite_hash']}` (spec "
            f"{got['spec_version']}): a difference may come from the suite, not the release"
        )
    if before["state"] != now["state"]:
        comparison.rows.append(("cell state", _state(before), _state(now)))
    order = {c.id: i for i, c in enumerate(spec.load())}
    ids = sorted(set(before["clauses"]) | set(now["clauses"]),
                 key=lambda cid: (order.get(cid, len(order)), cid))
    for cid in ids:
        a, b = _outcome(before, cid), _outcome(now, cid)
        if a == b:
            comparison.same += 1
        else:
            comparison.rows.append((cid, a, b))
    return comparison


def _result(results_dir: Path, cell_id: str) -> Optional[results.Result]:
    path = results_dir / f"{cell_id}.json"
    return results.load(path) if path.exists() else None


def _outcome(result: results.Result, clause_id: str) -> str:
    entry = result["clauses"].get(clause_id)
    if entry is None:
        return "not measured"
    return f"{entry['verdict']} · {_code(entry['label'])}"


def _state(result: results.Result) -> str:
    message = (result.get("message") or "").strip().splitlines()
    detail = f" ({_escape(message[-1][:120])})" if message else ""
    return f"{result['state']}{detail}"


def _code(text: str) -> str:
    # Backticks cannot be escaped inside a code span and a pipe would end the table cell.
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


# ---------------------------------------------------------------------------- summary


def describe_cell(cell: dict) -> str:
    parts = []
    if cell.get("fastapi"):
        parts.append(f"FastAPI {cell['fastapi']}")
    if cell.get("starlette"):
        bound = cell.get("starlette_bound")
        parts.append(f"Starlette {cell['starlette']}" + (f" ({bound})" if bound else ""))
    return " + ".join(parts or ["no Starlette"]) + f" on Python {cell['python']}"


def summary_markdown(
    new_fastapi: Sequence[str],
    new_starlette: Sequence[str],
    comparisons: Sequence[Comparison],
    cells_in_plan: int,
) -> str:
    """The issue body: what is new, then each changed cell's table, then the rest in brief."""
    titles = spec.by_id()
    changed = [c for c in comparisons if c.changed]
    lines = [
        "## bgmatrix watch: " + ("behaviour changed" if changed else "no behaviour changed"),
        "",
        "New on the package index since the plan: "
        + "; ".join(
            f"{name} {', '.join(versions)}"
            for name, versions in (("FastAPI", new_fastapi), ("Starlette", new_starlette))
            if versions
        )
        + f". The plan now has {cells_in_plan} cells, {len(comparisons)} of them new and run.",
    ]
    for comparison in changed:
        cell, previous = comparison.cell, comparison.previous
        assert previous is not None  # rows exist only when there was something to compare
        lines += [
            "",
            f"### `{cell['id']}` against `{previous['id']}`",
            "",
            f"{describe_cell(cell)}, against {describe_cell(previous)}.",
        ]
        if comparison.caveat:
            lines += ["", f"> Note: {comparison.caveat}."]
        lines += ["", "| clause | before | now |", "| --- | --- | --- |"]
        for what, before, now in comparison.rows:
            title = titles[what].title if what in titles else ""
            name = f"**{what}** {_escape(title)}".strip()
            lines.append(f"| {name} | {before} | {now} |")
        if comparison.same:
            lines += ["", f"{comparison.same} other clause(s) unchanged."]
    same = [c for c in comparisons if not c.changed and not c.skipped]
    if same:
        lines += ["", "### Same behaviour", ""]
        lines += [
            f"- `{c.cell['id']}` behaves like `{c.previous['id']}` ({c.same} clauses)"
            + (f" — note: {c.caveat}" if c.caveat else "")
            for c in same
            if c.previous is not None
        ]
    skipped = [c for c in comparisons if c.skipped]
    if skipped:
        lines += ["", "### Not compared", ""]
        lines += [f"- `{c.cell['id']}`: {c.skipped}" for c in skipped]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- command


def watch(
    index: IndexSource,
    plan_path: Path,
    results_dir: Path,
    jobs: int = 2,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> tuple[int, Optional[str]]:
    """Run the watch; return (exit code, Markdown summary or None when nothing was new)."""
    from bgmatrix.run import sweep  # imported here: a week without releases needs no cell runner

    # Looked up now, not at import: a caller (or pytest) may have replaced the streams.
    out, err = out or sys.stdout, err or sys.stderr

    old = store.load_plan(plan_path)
    fastapi_seen, starlette_seen = index.versions()
    new_fastapi, new_starlette = new_versions(old, fastapi_seen, starlette_seen)
    if not new_fastapi and not new_starlette:
        newest = (old["fastapi"][-1]["version"] if old["fastapi"] else "none",
                  old["starlette"][-1]["version"] if old["starlette"] else "none")
        print(f"bgmatrix watch: no release newer than the plan (FastAPI {newest[0]}, "
              f"Starlette {newest[1]}); nothing to run", file=err)
        return 0, None
    fastapi, starlette = index.releases()
    new = planner.build_plan(fastapi, starlette)
    known = {c["id"] for c in old["cells"]}
    cells = [c for c in new["cells"] if c["id"] not in known]
    store.write_plan(new, plan_path)
    print(f"bgmatrix watch: new FastAPI {', '.join(new_fastapi) or 'none'}, Starlette "
          f"{', '.join(new_starlette) or 'none'}: {len(cells)} new cell(s); plan {plan_path} "
          "updated", file=err)
    if cells:
        sweep.sweep(cells, results_dir, jobs=jobs, out=err)
    comparisons = [compare(c, previous_cell(c, old, new), results_dir) for c in cells]
    text = summary_markdown(new_fastapi, new_starlette, comparisons, len(new["cells"]))
    print(text, file=out, end="")
    return (CHANGED if any(c.changed for c in comparisons) else 0), text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--plan", type=Path, default=store.PLAN_PATH,
                   help="plan file to compare and update")
    p.add_argument("--results", default=str(results.RESULTS_DIR), help="results folder")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--summary", metavar="FILE",
                   help="also write the Markdown here when behaviour changed (and remove the "
                        "file otherwise), for CI to post as an issue")


def command(args: argparse.Namespace, index: IndexSource | None = None) -> int:
    """``bgmatrix watch``: 0 nothing changed, 1 behaviour changed (errors: the CLI's 2)."""
    summary = Path(args.summary) if args.summary else None
    if summary is not None:
        summary.unlink(missing_ok=True)  # a stale file must never be posted as this week's
    code, text = watch(index or LiveIndex(), Path(args.plan), Path(args.results), args.jobs)
    if code == CHANGED and summary is not None and text is not None:
        results.write_text_atomic(summary, text)
    return code
