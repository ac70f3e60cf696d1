"""Citations: GitHub-ready Markdown for a clause, or a clause in one cell, pinned to a snapshot.

``bgmatrix cite ATTACH-3 [--cell ID] [--results DIR]`` prints exactly the text the
copy button on the clause (or cell) page yields, so a maintainer can paste it into an upstream
thread from either place.

Every citation names its snapshot (``2026-12-02-a1b2c3d``) and the commit its results were
measured at, and links only to things that never change: the snapshot's own pages, which the
deploy job keeps at ``<site>/snapshots/<id>/``, and the raw result files at that commit
(``<repo>/blob/<commit>/results/<cell>.json``). The site URL and the repository URL come from
the environment (``BGMATRIX_SITE_URL``, ``BGMATRIX_REPO_URL``; the deploy workflow sets both
from the repository). Without them a local build links relative to the site root, and
``bgmatrix report --publish`` refuses to build (:class:`PublishError`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bgmatrix.errors import BgmatrixError, UsageError
from bgmatrix.site import model
from bgmatrix.site.markup import md_code

#: Where the public base URL comes from: the deploy workflow sets it from the repository
#: (``https://<owner>.github.io/<repo>/``); set it locally to preview pinned citations.
SITE_URL_ENV = "BGMATRIX_SITE_URL"
#: The repository the raw results are linked in (``https://github.com/<owner>/<repo>``).
REPO_URL_ENV = "BGMATRIX_REPO_URL"
#: Each published snapshot's pages stay at ``<site>/snapshots/<id>/`` (the deploy job keeps them).
SNAPSHOTS_FOLDER = "snapshots"
#: More ranges than this and a citation stops being a sentence; the page has them all.
MAX_RANGES = 4
#: Host names that can never be the published site (RFC 2606 / 6761 reserved names).
_RESERVED_SUFFIXES = (".example", ".invalid", ".test", ".localhost", ".local")
_RESERVED_HOSTS = ("example.com", "example.net", "example.org", "localhost", "127.0.0.1")


class PublishError(BgmatrixError):
    """A build meant for publishing lacks what pins its citations: a real site URL, the
    repository URL, or a commit of the results it cites."""


# ---------------------------------------------------------------------------------------------
# Configuration: the site and repository URLs


def site_url() -> str | None:
    """The configured public base URL (``$BGMATRIX_SITE_URL``) with one trailing slash, or
    None: a local build, whose links are relative to the site root."""
    url = os.environ.get(SITE_URL_ENV, "").strip()
    return (url.rstrip("/") + "/") if url else None


def repo_url() -> str | None:
    """The repository's web URL (``$BGMATRIX_REPO_URL``), without a trailing slash or .git."""
    url = os.environ.get(REPO_URL_ENV, "").strip().rstrip("/")
    return url.removesuffix(".git") or None


def base_url() -> str:
    """The site's root: the configured URL, or ``/`` for a local build."""
    return site_url() or "/"


def placeholder(url: str) -> str | None:
    """Why ``url`` cannot be a published site's address, or None when it can."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        return "it is not an http(s) URL"
    if host in _RESERVED_HOSTS or host.endswith(_RESERVED_SUFFIXES) or \
            any(host.endswith("." + h) for h in _RESERVED_HOSTS):
        return f"{host} is a reserved placeholder name"
    return None


# ---------------------------------------------------------------------------------------------
# The commit a snapshot was measured at


@dataclass(frozen=True)
class Pin:
    """Where a snapshot's raw results live in the repository: the commit that last changed
    the results folder (clean, so its files are exactly the snapshot) and the folder's path."""

    commit: str | None = None
    folder: str = "results"
    toplevel: Path | None = None  # the checkout, to read an earlier snapshot through git


_PINS: dict[str, Pin] = {}


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def results_pin(results_dir: Path) -> Pin:
    """The commit of ``results_dir`` when it is a clean folder of a git checkout (nothing
    changed, added or deleted since the last commit that touched it); else an empty pin."""
    folder = Path(results_dir)
    try:
        toplevel = Path(_git(folder, "rev-parse", "--show-toplevel"))
        prefix = _git(folder, "rev-parse", "--show-prefix").rstrip("/")
        if not prefix or _git(folder, "status", "--porcelain", "--untracked-files=all", "--",
                              "."):
            return Pin(toplevel=toplevel)
        commit = _git(folder, "log", "-1", "--format=%H", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return Pin()  # not a git checkout, or no git
    return Pin(commit or None, prefix, toplevel)


def locate(snapshot: model.Snapshot, results_dir: Path) -> Pin:
    """Find and remember the commit ``snapshot`` was read from, so every
    citation of it, on any page, links the same raw data."""
    _PINS[snapshot.id] = found = results_pin(results_dir)
    return found


def pin(snapshot: model.Snapshot) -> Pin:
    return _PINS.get(snapshot.id, Pin())


def check_publishable(snapshot: model.Snapshot) -> None:
    """Refuse (one line) a publishing build whose citations would not last."""
    url = site_url()
    if url is None:
        raise PublishError(f"--publish needs the site URL: set {SITE_URL_ENV} (the deploy "
                           "workflow sets it to https://<owner>.github.io/<repo>/)")
    if (why := placeholder(url)) is not None:
        raise PublishError(f"--publish refuses the site URL {url}: {why}; set {SITE_URL_ENV} "
                           "to the address the site is published at")
    if repo_url() is None:
        raise PublishError(f"--publish needs the repository URL for pinned raw-data links: set "
                           f"{REPO_URL_ENV} (e.g. https://github.com/<owner>/<repo>)")
    if pin(snapshot).commit is None:
        raise PublishError("--publish needs the results committed: the results folder is not "
                           "a clean folder of a git checkout, so no commit pins its data")


# ---------------------------------------------------------------------------------------------
# URLs pinned to a snapshot


def snapshot_root(snapshot_id: str) -> str:
    """The published pages of one snapshot (the root of the site for a local build, which
    has no snapshot folders)."""
    url = site_url()
    return f"{url}{SNAPSHOTS_FOLDER}/{snapshot_id}/" if url else base_url()


def _root(snapshot: model.Snapshot | None) -> str:
    return snapshot_root(snapshot.id) if snapshot is not None else base_url()


def clause_url(clause_id: str, snapshot: model.Snapshot | None = None) -> str:
    return f"{_root(snapshot)}clauses/{clause_id}.html"


def cell_url(cell_id: str, snapshot: model.Snapshot | None = None) -> str:
    return f"{_root(snapshot)}cells/{cell_id}.html"


def commit_url(commit: str) -> str | None:
    repo = repo_url()
    return f"{repo}/commit/{commit}" if repo else None


def raw_result_url(cell_id: str, snapshot: model.Snapshot | None = None) -> str:
    """The cell's result file at the commit it was measured on; without a repository URL or
    a commit (a local build of uncommitted results), the copy beside the site's pages."""
    found = pin(snapshot) if snapshot is not None else Pin()
    repo = repo_url()
    if repo and found.commit:
        return f"{repo}/blob/{found.commit}/{found.folder}/{cell_id}.json"
    return f"{_root(snapshot)}results/{cell_id}.json"


#: The name the cell pages use for a result file's pinned link.
result_url = raw_result_url


def results_url(snapshot: model.Snapshot) -> str:
    """Every raw result of the snapshot: the results folder at its commit, else the
    snapshot's Downloads page (a page, not the 3 MB matrix.json itself)."""
    found, repo = pin(snapshot), repo_url()
    if repo and found.commit:
        return f"{repo}/tree/{found.commit}/{found.folder}"
    return f"{_root(snapshot)}downloads.html"


def snapshot_line(snapshot: model.Snapshot) -> str:
    """``bgmatrix snapshot `<id>` at commit `abc1234`, spec 0.2.0``: what a citation cites."""
    commit = pin(snapshot).commit
    at = f" at commit {md_code(commit[:12])}" if commit else " (uncommitted results)"
    return f"bgmatrix snapshot {md_code(snapshot.id)}{at}, spec {snapshot.spec_version}"


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
             + (cause_note(timeline, r.first) if i else "")
             for i, r in enumerate(runs[:MAX_RANGES])]
    if len(runs) > MAX_RANGES:
        shown.append(f"and {len(runs) - MAX_RANGES} more ranges (see the clause page)")
    return "; ".join(shown)


def cause_note(timeline: model.Timeline, release: str) -> str:
    """`` (the change follows anyio 3.7.1 → 4.0.0, not Starlette)`` where ``bgmatrix
    attribute`` traced the flip into ``release`` to something other than the line's framework
    (issue 13: a release line never credits the framework for a dependency's change)."""
    from bgmatrix.site import attribution  # the attribution file is read once per change

    causes = attribution.outside_causes(timeline.clause_id, timeline.kind, release)
    if not causes:
        return ""
    name = "FastAPI" if timeline.kind == "fastapi" else "Starlette"
    return f" (the change follows {' and '.join(causes)}, not {name})"


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
            f"**[{clause.id}]({clause_url(clause.id, snapshot)})** ({clause.keyword}) — "
            f"{clause.title}",
            f"Behaviour: {ranges_text(snapshot, timeline)}.",
            f"{snapshot_line(snapshot)} · [clause page]({clause_url(clause.id, snapshot)}) · "
            f"[raw results]({results_url(snapshot)})",
        ]
    )


def cell_markdown(snapshot: model.Snapshot, clause_id: str, cell_id: str) -> str:
    cell = snapshot.results[cell_id]["cell"]
    return _quote(
        [
            clause_line(snapshot, clause_id),
            f"{cell_title(cell)}: {cell_outcome_text(snapshot, clause_id, cell_id)}",
            cell_source_line(snapshot, cell_id),
        ]
    )


def cell_outcome_text(snapshot: model.Snapshot, clause_id: str, cell_id: str) -> str:
    """What a cell citation says the cell did: ```drop` (deviates); same behaviour in
    FastAPI 0.10.0 – 0.165.0.``, the second line after the cell's title."""
    result = snapshot.results[cell_id]
    cell = result["cell"]
    same = ""
    if cell["kind"] != "candidate":
        kind = "starlette" if cell["kind"] == "starlette" else "fastapi"
        version = cell["starlette"] if kind == "starlette" else cell["fastapi"]
        run = snapshot.timeline(clause_id, kind).run_of(version) if version else None
        if run is not None and len(run.releases) > 1 and run.measured:
            same = f"; same behaviour in {span_text(snapshot, run, kind)}"
    return f"{describe((model.outcome(result, clause_id),))}{same}."


def cell_source_line(snapshot: model.Snapshot, cell_id: str) -> str:
    """A cell citation's last line: the snapshot, the cell page and the raw result."""
    return (f"{snapshot_line(snapshot)} · [cell page]({cell_url(cell_id, snapshot)}) · "
            f"[raw result]({raw_result_url(cell_id, snapshot)})")


def clause_line(snapshot: model.Snapshot, clause_id: str) -> str:
    """A cell citation's first line: the clause, linked, with its keyword and title."""
    clause = snapshot.clause_by_id[clause_id]
    return (f"**[{clause.id}]({clause_url(clause.id, snapshot)})** ({clause.keyword}) — "
            f"{clause.title}")


def cell_citation_heads(snapshot: model.Snapshot) -> dict[str, str]:
    """Every clause's first line of a cell citation, exactly as ``cell_markdown`` writes it:
    the same on every cell page of a snapshot, so the site ships it once (js/cite-data.js)."""
    return {c.id: _quote([clause_line(snapshot, c.id), ""]).split("\n")[0]
            for c in snapshot.clauses}


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
    locate(snapshot, args.results)
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
