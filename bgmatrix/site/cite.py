"""Citations: GitHub-ready Markdown for a clause, or a clause in one cell, with permalinks.

``bgmatrix cite ATTACH-3 [--cell ID] [--results DIR]`` prints exactly the text the
copy button on the clause (or cell) page yields, so a maintainer can paste it into an upstream
thread from either place.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from bgmatrix.errors import UsageError
from bgmatrix.site import model
from bgmatrix.site.markup import md_code
from bgmatrix.spec import ROOT

MKDOCS_YML = ROOT / "site" / "mkdocs.yml"
#: More ranges than this and a citation stops being a sentence; the page has them all.
MAX_RANGES = 4


@cache
def base_url(config: Path = MKDOCS_YML) -> str:
    """The site's base URL, read from ``site_url`` in mkdocs.yml: the one place it is set."""
    try:
        text = config.read_text(encoding="utf-8")
    except OSError:
        text = ""
    match = re.search(r"^site_url:\s*['\"]?([^'\"\s#]+)", text, re.M)
    url = match.group(1) if match else "/"  # no site_url: links relative to the site root
    return url if url.endswith("/") else url + "/"


def clause_url(clause_id: str) -> str:
    return f"{base_url()}clauses/{clause_id}.html"


def cell_url(cell_id: str) -> str:
    return f"{base_url()}cells/{cell_id}.html"


def raw_result_url(cell_id: str) -> str:
    return f"{base_url()}results/{cell_id}.json"


def matrix_json_url() -> str:
    return f"{base_url()}downloads/matrix.json"


def describe(outcomes: tuple[model.Outcome, ...], code: Callable[[str], str] = md_code) -> str:
    """``drop`` (deviates), or several joined with "/" for a release whose cells disagree.

    ``code`` renders a label: a Markdown code span here, escaped HTML on the site's pages.
    """
    parts = []
    for verdict, label in outcomes:
        if not model.is_measured((verdict, label)):
            parts.append(f"no measurement ({verdict})")
        elif verdict == "n/a":
            parts.append("n/a")
        else:
            parts.append(f"{code(label)} ({verdict})")
    return " / ".join(parts) or "no measurement"


def span_text(snapshot: model.Snapshot, run: model.Run, kind: str) -> str:
    name = "FastAPI" if kind in ("fastapi", "candidate") else "Starlette"
    first, last = model.clean_version(run.first), model.clean_version(run.last)
    if run.first == run.last:
        return f"{name} {first}"
    measured = run.measured_count
    of = "" if measured == run.span else f", {measured} of {run.span} releases measured"
    return f"{name} {first} – {last}{of}"


def ranges_text(
    snapshot: model.Snapshot, timeline: model.Timeline, code: Callable[[str], str] = md_code
) -> str:
    runs = [r for r in timeline.runs if r.measured]
    if not runs:
        return "not measured yet"
    shown = [f"{describe(r.outcomes, code)} in {span_text(snapshot, r, timeline.kind)}"
             for r in runs[:MAX_RANGES]]
    if len(runs) > MAX_RANGES:
        shown.append(f"and {len(runs) - MAX_RANGES} more ranges (see the clause page)")
    return "; ".join(shown)


def timeline_kind(snapshot: model.Snapshot, clause_id: str) -> str:
    """FastAPI releases for FastAPI-level clauses; Starlette releases for Starlette-level
    clauses when only pure-Starlette cells measured them."""
    clause = snapshot.clause_by_id[clause_id]
    if clause.level == "Starlette" and not snapshot.cells("fastapi"):
        return "starlette"
    return "fastapi"


def clause_markdown(snapshot: model.Snapshot, clause_id: str) -> str:
    clause = snapshot.clause_by_id[clause_id]
    timeline = snapshot.timeline(clause_id, timeline_kind(snapshot, clause_id))
    return _quote(
        [
            f"**[{clause.id}]({clause_url(clause.id)})** ({clause.keyword}) — {clause.title}",
            f"Behaviour: {ranges_text(snapshot, timeline)}.",
            f"bgmatrix snapshot {md_code(snapshot.id)}, spec {snapshot.spec_version} · "
            f"[clause page]({clause_url(clause.id)}) · [raw results]({matrix_json_url()})",
        ]
    )


def cell_markdown(snapshot: model.Snapshot, clause_id: str, cell_id: str) -> str:
    clause = snapshot.clause_by_id[clause_id]
    result = snapshot.results[cell_id]
    cell = result["cell"]
    out = model.outcome(result, clause_id)
    kind = "starlette" if cell["kind"] == "starlette" else "fastapi"
    same = ""
    if cell["kind"] != "candidate":
        version = cell["starlette"] if kind == "starlette" else cell["fastapi"]
        for run in snapshot.timeline(clause_id, kind).runs:
            if version in run.releases and len(run.releases) > 1 and run.measured:
                same = f"; same behaviour in {span_text(snapshot, run, kind)}"
    return _quote(
        [
            f"**[{clause.id}]({clause_url(clause.id)})** ({clause.keyword}) — {clause.title}",
            f"{cell_title(cell)}: {describe((out,))}{same}.",
            f"bgmatrix snapshot {md_code(snapshot.id)}, spec {snapshot.spec_version} · "
            f"[cell page]({cell_url(cell['id'])}) · [raw result]({raw_result_url(cell['id'])})",
        ]
    )


def _quote(lines: list[str]) -> str:
    """A GitHub blockquote whose lines stay lines (a trailing backslash is a hard break)."""
    return "\n".join(f"> {line}" + (" \\" if i < len(lines) - 1 else "")
                     for i, line in enumerate(lines))


def cell_title(cell: Mapping[str, Any]) -> str:
    """``FastAPI 0.106.0 + Starlette 0.27.0 on Python 3.8`` (versions are schema-checked)."""
    parts = []
    if cell["kind"] == "candidate":
        parts.append(f"Candidate {md_code(cell['candidate'] or cell['id'], 80)}")
    if cell["fastapi"]:
        parts.append(f"FastAPI {model.clean_version(cell['fastapi'])}")
    if cell["starlette"]:
        parts.append(f"Starlette {model.clean_version(cell['starlette'])}")
    return " + ".join(parts) + f" on Python {cell['python']}"


def default_clause(snapshot: model.Snapshot, result: Mapping[str, Any]) -> str:
    """The clause a cell page cites: the conflict, or for a pure Starlette cell the first
    Starlette-level clause it measured."""
    if result["cell"]["kind"] != "starlette" and model.CONFLICT_CLAUSE in snapshot.clause_by_id:
        return model.CONFLICT_CLAUSE
    starlette = [c.id for c in snapshot.clauses if c.level == "Starlette"]
    for cid in starlette:
        if model.outcome(result, cid)[0] in ("conforms", "deviates"):
            return cid
    return (starlette or [snapshot.clauses[0].id])[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clause", help="a clause ID, e.g. ATTACH-3")
    parser.add_argument("--cell", help="a cell id, e.g. fa-0.106.0_st-0.27.0_py3.8")
    parser.add_argument("--results", type=Path, default=model.results.RESULTS_DIR,
                        help="the results folder (default: results/)")


def command(args: argparse.Namespace) -> int:
    """``bgmatrix cite CLAUSE [--cell ID]``: print the citation Markdown."""
    snapshot = model.load_snapshot(args.results)
    if args.clause not in snapshot.clause_by_id:
        raise UsageError(f"unknown clause {args.clause!r}; clause IDs look like ATTACH-3 "
                         "(see spec/)")
    if args.cell is None:
        print(clause_markdown(snapshot, args.clause))
    elif args.cell not in snapshot.results:
        raise UsageError(f"no result for cell {args.cell!r} in {args.results}")
    else:
        print(cell_markdown(snapshot, args.clause, args.cell))
    return 0
