"""The page catalogue: the site's generated pages, as Markdown text, one function per page
(or kind of page). Cell pages, which carry the evidence, live in ``cell_pages``.

Prose is Markdown, so mkdocs checks its links; tables and evidence are raw HTML blocks, made
only by the Jinja2 templates of ``templates/`` (through ``render``), which escape every piece
of result text; result text in the Markdown itself passes through ``markup.esc``.
Pages under a folder (clauses/, cells/, spec/, suite/) link up with ``../``; the site uses
plain ``.html`` URLs (``use_directory_urls: false``), which raw HTML links can rely on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from markupsafe import Markup

from bgmatrix import agreement, results, spec, vocabulary
from bgmatrix.site import attribution, cite, deployment, fidelity, history, model, releases, suite
from bgmatrix.site.changes import ROW_LIMIT, Changes
from bgmatrix.site.markup import esc, json_for_script
from bgmatrix.site.matrix import legend_html
from bgmatrix.site.render import (
    NOT_SEARCHED,
    SEARCH_EXCLUDED,
    cell_href,
    citation_block,
    clause_href,
    code,
    link,
    outcome_html,
    outcomes_html,
    part,
    plural,
    raw,
    table,
    text,
    unsearched,
    version_parts,
    version_text,
)
from bgmatrix.site.wire_notes import WIRE_NOTES
from bgmatrix.spec import Clause

NO_RESULTS = "No results yet: run `nox` (or `bgmatrix run ...`) to measure releases."


@dataclass(frozen=True)
class Headline:
    question: str
    clause: str


#: The matrix filtered to the conflict clauses (the cases a profile is read from).
CONFLICT_FILTER = "matrix.html#clause=" + ",".join(vocabulary.CONFLICT_CLAUSES)

#: The questions the home page answers first; each answer is read from the clause's timeline.
HEADLINES = (
    Headline("Do injected tasks survive a Response with its own background?", "ATTACH-3"),
    Headline("Do they survive a Response whose background is its own BackgroundTasks?",
             "ATTACH-4"),
    Headline("Do tasks added by dependencies survive that conflict?", "ATTACH-16"),
    Headline("Does the identity pattern (the injected object as the response's background, "
             "common in public code) run each task once?", "ATTACH-6"),
    Headline("Does an explicit background=None behave like no background?", "ATTACH-5"),
    Headline("Do injected tasks run when the endpoint returns data?", "ATTACH-1"),
    Headline("Do the tasks of the endpoint and its dependencies all run, in the order added?",
             "COLLECT-2"),
    Headline("Do tasks start only after the whole response body was sent?", "EXEC-1"),
    Headline("Is a yield dependency's resource (a database session) still open while the tasks "
             "run?", "LIFE-1"),
    Headline("Does a Response reused across requests keep each request's tasks to itself?",
             "ISO-1"),
    Headline("Under BaseHTTPMiddleware, does the client get the body before the tasks start?",
             "MW-1"),
    Headline("Do injected tasks survive the conflict with every response class?", "SHAPE-2"),
    Headline("In every graded case, does each task run exactly once?", "RES-2"),
    Headline("Do WebSocket endpoints run (or refuse) their tasks?", "ATTACH-14"),
)

#: label -> (short answer, what happened), for the questions above ("do tasks run/survive?").
ANSWERS = {
    "drop": ("No", "dropped without a warning"),
    "warn": ("No", "dropped, with a warning"),
    "merge": ("Yes", "both sets run, injected tasks first"),
    "merge-reordered": ("Yes", "both sets run, the response's own background first"),
    "warn+merge": ("Yes", "both sets run, with a needless warning"),
    "warn+merge-reordered": ("Yes", "both sets run, own background first, with a warning"),
    "duplicate": ("No", "a task runs more than once"),
    "lost-all": ("No", "no task runs at all"),
    "replace": ("No", "the response's own background is dropped instead"),
    "partial": ("Partly", "only some of the tasks run"),
    "ran": ("Yes", "each task runs once"),
    "none-ran": ("No", "no task runs"),
    "reordered": ("Yes", "every task runs, out of order"),
    "false-warning": ("Yes", "every task runs, with a false warning"),
}


# ---------------------------------------------------------------------------------------------
# Shared pieces (the rest are in ``render``)


def snapshot_line(snapshot: model.Snapshot) -> str:
    states = Counter(r["state"] for r in snapshot.results.values())
    failed = sum(n for s, n in states.items() if s != "ok")
    return (
        f"Snapshot `{snapshot.id}` · spec {snapshot.spec_version} · "
        f"{len(snapshot.results)} cells measured ({failed} without verdicts)"
    )


def run_releases_html(snapshot: model.Snapshot, run: model.Run, root: str, kind: str) -> Markup:
    """``0.10.0 – 0.115.0`` with an expandable list of every release's cells."""
    title = run.first if run.first == run.last else f"{run.first} – {run.last}"
    count = len(run.releases)
    note = "" if run.measured_count == run.span else (
        f", {run.measured_count} of {run.span} measured")
    if len(run.cells) == 1:
        return link(cell_href(root, run.cells[0]), title)
    links = Markup(" ").join(_cell_link(root, cid, version_parts(snapshot.results[cid]["cell"]))
                             for cid in run.cells)
    return part("run_releases")(title, plural(count, "release") + note, links)


def _cell_link(root: str, cell_id: str, parts: list[tuple[str, str, int]]) -> Markup:
    """A cell's link in a run's list, made once per cell and root: every clause page lists
    every cell (~50,000 links on the full matrix, 3 s through the template each time)."""
    return _cell_link_of(root, cell_id, tuple(parts))


@lru_cache(maxsize=4096)
def _cell_link_of(root: str, cell_id: str, parts: tuple[tuple[str, str, int], ...]) -> Markup:
    return link(cell_href(root, cell_id), part("version_text")(list(parts)))


# ---------------------------------------------------------------------------------------------
# Home


def answer(snapshot: model.Snapshot, headline: Headline) -> str:
    """One line: the current answer, where it holds, and what earlier releases did."""
    clause = snapshot.clause_by_id.get(headline.clause)
    if clause is None:
        return f"- **{headline.question}** (clause {headline.clause} is not in the spec)"
    timeline = snapshot.timeline(clause.id)
    runs = [r for r in timeline.runs if r.measured]
    ref = f"[{clause.id}](clauses/{clause.id}.md)"
    if not runs:
        return f"- **{headline.question}** Not measured yet. ({ref})"

    def said(run: model.Run) -> str:
        parts = []
        for verdict, label in run.outcomes:
            short, what = ANSWERS.get(label, ANSWERS.get(model.conflict_part(label), ("", "")))
            if not short:
                short = {"conforms": "Yes", "deviates": "No"}.get(verdict, "Not applicable")
                what = f"observed {code(label)}" if verdict != "n/a" else "the release lacks it"
                if label.startswith("schedule-dependent"):
                    short, what = "Not always", "it depends on how the tasks are scheduled"
            parts.append(f"{short} — {what} ({esc(verdict)})")
        return " / ".join(parts)

    def where(run: model.Run) -> str:
        if run.first == run.last:
            return f"in {esc(run.first)}"
        every = "every release" if run.measured_count == run.span else (
            f"every measured release ({run.measured_count} of {run.span})")
        return f"in {every} from {esc(run.first)} to {esc(run.last)}"

    latest = runs[-1]
    line = f"- **{headline.question}** {said(latest)} {where(latest)}"
    if len(runs) > 1:
        earlier = "; ".join(f"{said(r)} {where(r)}" for r in reversed(runs[-4:-1]))
        more = f" and {plural(len(runs) - 4, 'earlier range')}" if len(runs) > 4 else ""
        line += f". Earlier: {earlier}{more}"
    if timeline.flips:
        line += (f". {part('flip')('Flips back and forth')} (in "
                 + ", ".join(esc(v) for v, _ in timeline.flips[:5]) + ")")
    return line + f". ({ref})"


#: Wall tile classes -> legend names (conflict behaviours for ATTACH-3, verdicts otherwise).
WALL_NAMES = {
    "drop": "drop (lost silently)", "warn": "warn", "merge": "merge",
    "warnmerge": "warn+merge", "duplicate": "duplicate", "lost": "lost-all",
    "other": "other label", "ok": "conforms", "dev": "deviates",
    "mixed": "cells of the release disagree", "na": "n/a",
    "failed": "suite did not run", "none": "not measured yet",
}


def wall_class(clause_id: str, outs: tuple[model.Outcome, ...]) -> str:
    """The tile class of one release: its conflict behaviour for the conflict clause, its
    verdict for any other clause."""
    if clause_id == model.CONFLICT_CLAUSE:
        classes = {model.behaviour_class(o) for o in outs}
    else:
        classes = {{"conforms": "ok", "deviates": "dev", "n/a": "na", "missing": "none"}.get(
            v, "failed") for v, _ in outs}
    return classes.pop() if len(classes) == 1 else "mixed"


def wall_data(snapshot: model.Snapshot) -> dict:
    """Every headline clause's tiles, for the wall's clause switch (js/releases.js): per
    clause a class and a label index per planned release, labels listed once."""
    cells = snapshot.by_release("fastapi")
    versions = snapshot.planned["fastapi"]
    clauses = {}
    for clause_id in dict.fromkeys(h.clause for h in HEADLINES):
        if clause_id not in snapshot.clause_by_id:
            continue
        labels: dict[str, int] = {}
        tiles = []
        for version in versions:
            members = cells.get(version, [])
            if not members:
                tiles.append(["none", labels.setdefault("not measured yet", len(labels))])
                continue
            outs = snapshot.release_outcomes(members, clause_id)
            said = " / ".join(f"{lb or v} ({v})" if lb != v else v for v, lb in outs)
            tiles.append([wall_class(clause_id, outs), labels.setdefault(said, len(labels))])
        clauses[clause_id] = {"labels": list(labels), "tiles": tiles}
    return {"versions": versions, "clauses": clauses, "names": WALL_NAMES}


def wall(snapshot: model.Snapshot) -> Markup:
    """One tile per FastAPI release, coloured by its conflict behaviour (ATTACH-3's label);
    the switch above it (js/releases.js) recolours it by any headline clause."""
    cells = snapshot.by_release("fastapi")
    tiles = []  # class, text, title, href
    used: Counter[str] = Counter()
    for version in snapshot.planned["fastapi"]:
        members = cells.get(version, [])
        if not members:
            cls, title, href = "none", f"FastAPI {version}: not measured yet", None
        else:
            outs = snapshot.release_outcomes(members, model.CONFLICT_CLAUSE)
            cls = wall_class(model.CONFLICT_CLAUSE, outs)
            said = " / ".join(f"{lb or v} ({v})" for v, lb in outs)
            title = f"FastAPI {version}: {said}"
            href = cell_href("", members[0]["cell"]["id"])
        used[cls] += 1
        tiles.append({"cls": cls, "text": version, "title": title, "href": href})
    legend = [(cls, name, used[cls]) for cls, name in WALL_NAMES.items() if used[cls]]
    return part("wall")(tiles, legend)


def home(snapshot: model.Snapshot) -> str:
    lines = ["# Background tasks in FastAPI and Starlette", ""]
    lines.append(
        "Which FastAPI and Starlette releases drop, warn about or merge background tasks when "
        "an endpoint returns a `Response` with its own `background` (FastAPI #11215), and the "
        "evidence for every answer: each release is installed as it shipped and measured "
        "against the [spec](spec/index.md)."
    )
    lines.append("")
    if not snapshot.results:
        lines += [f"**{NO_RESULTS}**", ""]
    else:
        lines += [snapshot_line(snapshot) + ".", ""]
    lines += ["## Is my version affected?", "",
              "Type your FastAPI version (and, if you like, your Starlette version) to see "
              "every hazard the release has, what it does to your application, the safe "
              "pattern, and the evidence. Every release is listed on the "
              "[releases page](releases/index.md).", ""]
    lines.append(raw(releases.version_box(snapshot)))
    found = releases.overview(snapshot)
    if found:
        lines += ["## Hazards found" + NOT_SEARCHED, "",
                  "Each hazard with the FastAPI releases that have it (any measured cell of "
                  "the release deviates) and the safe pattern; a release's page shows the "
                  "code.", "", *found, ""]
    lines += ["## Headline answers", ""]
    by_chapter: dict[str, list[Headline]] = {}
    for h in HEADLINES:
        clause = snapshot.clause_by_id.get(h.clause)
        by_chapter.setdefault(clause.chapter if clause else "other", []).append(h)
    for chapter in [*spec.CHAPTERS, "other"]:
        if chapter in by_chapter:
            title = chapter.capitalize()
            if chapter != "other":
                title = f"[{title}](spec/{chapter}.md)"
            lines += [f"### {title}", ""]
            lines += [answer(snapshot, h) for h in by_chapter[chapter]]
            lines.append("")
    lines += deployment.home_lines()  # "Does my task survive a deploy?" (matrix/deployment.json)
    lines += trust_lines(snapshot)
    lines += ["## Every FastAPI release, by conflict behaviour", ""]
    lines.append(
        f"One tile per release, coloured by the label of "
        f"[{model.CONFLICT_CLAUSE}](clauses/{model.CONFLICT_CLAUSE}.md) (or, with the switch, "
        "by the verdict of any headline clause); a tile links to the release's evidence. The "
        "[matrix](matrix.md) has every clause; [how to read this site](about.md) explains "
        "labels and verdicts."
    )
    choices = [(h.clause, h.question) for h in HEADLINES if h.clause in snapshot.clause_by_id]
    lines.append(raw(part("wall_switch", releases.TEMPLATE)(
        choices, model.CONFLICT_CLAUSE, Markup(json_for_script(wall_data(snapshot))))))
    lines.append(raw(wall(snapshot)))
    return "\n".join(lines) + "\n"


def trust_lines(snapshot: model.Snapshot) -> list[str]:
    """How far the evidence holds: real servers against the raw harness, and the releases' own
    tests in their cells (each from its record; a line is left out when its record is)."""
    found = [d for items in snapshot.disagreements.values() for d in items]
    lines = []
    if snapshot.probes is not None or found:
        left = sum(1 for d in found if d.explanation is None)
        lines.append(
            f"- **Do real servers agree with the harness?** {len(found)} wire runs of a clause "
            "read differently from the raw-ASGI label; "
            + (f"{left} not yet explained" if left else "each is explained")
            + " by a harness schedule or a server fact measured with no framework (on each "
            "clause page; [Servers](servers.md)).")
    fidelity_line = fidelity.home_line(fidelity.load())
    if fidelity_line:
        lines.append(fidelity_line)
    return ["## How far the evidence holds", "", *lines, ""] if lines else []


# ---------------------------------------------------------------------------------------------
# Matrix


def matrix_page(snapshot: model.Snapshot, data: dict) -> str:
    lines = [
        "---\nhide:\n  - navigation\n  - toc\n---\n",  # the grid needs the page's width
        "# Matrix",
        "",
        "Clauses across releases. Consecutive releases whose outcomes are identical are folded "
        "into one range (click a range to expand it); the Starlette column says which versions "
        "a row ran with, and the Starlette line filter picks one. A cell shows the verdict as a "
        "glyph (✓ conforms, ✗ deviates, – n/a, ! no measurement, · not measured) and the "
        "behaviour in a word; hover for the full label, click a release for its evidence. "
        "Filters are kept in the "
        "address, so a filtered view can be linked: for example "
        f'{link(CONFLICT_FILTER, "the conflict clauses")} or '
        f'{link("matrix.html#clause=ATTACH-3&behaviour=drop", "every release that drops")}.',
        "",
    ]
    if not snapshot.results:
        lines += [f"**{NO_RESULTS}**", ""]
    lines.append(raw(part("matrix_filters")()))
    lines.append(raw(part("matrix_holder")()))
    # json_for_script leaves no <, > or & in the data: nothing in it can end the element.
    lines.append(raw(part("matrix_data")(Markup(json_for_script(data)))))
    lines += ["## Legend" + NOT_SEARCHED, "", raw(legend_html(data))]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Clauses

#: Negative clauses (MUST NOT, SHOULD NOT) whose spec title states the outcome they protect:
#: their requirement reads as what must not happen. Positive clauses read "MUST: <title>".
NEGATIVE_TITLES = {
    "ATTACH-3": "lose injected tasks silently when the Response has its own background",
    "ATTACH-4": "lose injected tasks silently when the Response has its own task collection",
    "ATTACH-15": "run the deferred tasks of a request that failed",
    "ATTACH-16": "lose dependencies' tasks silently when the Response has its own background",
    "ATTACH-17": "lose injected tasks silently when the response class carries its own "
                 "background",
    "EXEC-5": "start a second response when a task raises after the body was sent",
    "LIFE-5": "swallow an HTTPException raised in teardown after the response started",
    "ISO-1": "replay an earlier request's tasks from a reused Response",
    "ISO-3": "change the background of a Response the application returned",
    "ISO-5": "change the application's background objects",
    "MW-3": "swallow task exceptions under BaseHTTPMiddleware",
    "SHAPE-2": "lose injected tasks silently in the conflict, whatever the response class",
    "SHAPE-4": "run a task for a request the route refuses",
    "SHAPE-5": "lose injected tasks silently when an HTTP middleware replaces the response",
    "SHAPE-7": "lose injected tasks silently in the conflict in mounted apps and nested "
               "routers",
    "SHAPE-9": "lose injected tasks silently when the Response has an empty task collection",
    "SHAPE-11": "lose dependencies' tasks silently in the conflict, wherever the dependency "
                "sits",
    "SHAPE-13": "commit injected tasks when an exception handler answers the failure",
    "SHAPE-15": "run a task added before validation failed",
    "RES-3": "signal a loss when nothing is lost",
}


def requirement(clause: Clause) -> str:
    """The clause's title read as its requirement, keyword first: ``MUST NOT lose injected
    tasks silently when ...``, ``MUST: One collection per request, ...``."""
    if clause.id in NEGATIVE_TITLES:
        return f"{clause.keyword} {NEGATIVE_TITLES[clause.id]}"
    if clause.keyword.endswith("NOT"):  # a new negative clause: never read against its title
        return f"{clause.keyword} fail: {clause.title}"
    return f"{clause.keyword}: {clause.title}"


def requirement_heading(clause: Clause) -> str:
    """``ATTACH-3 · MUST NOT lose injected tasks silently when ...``: the clause page's title."""
    return f"{clause.id} · {requirement(clause)}"


def spec_body(clause: Clause) -> str:
    """The clause's spec text for its own page: heading dropped, links pointed at spec/."""
    body = clause.text.split("\n", 1)[1] if "\n" in clause.text else ""
    body = re.sub(r"\]\(#", f"](../spec/{clause.chapter}.md#", body)
    body = re.sub(r"\]\(([a-z]+\.md)", r"](../spec/\1", body)
    return body.rstrip() + "\n"


def releases_summary(snapshot: model.Snapshot, clause: Clause, root: str) -> str:
    """The clause's "*Releases.*" line, generated from the results when the site is built
    (spec/ itself never carries it)."""
    timeline = snapshot.timeline(clause.id, cite.timeline_kind(snapshot, clause.id))
    said = cite.ranges_text(snapshot, timeline, code=code)
    evidence = f"[Timeline and evidence]({root}clauses/{clause.id}.md)"
    return f"*Releases.* {said[:1].upper()}{said[1:]}. {evidence}."


def timeline_table(snapshot: model.Snapshot, timeline: model.Timeline, root: str) -> Markup:
    change = timeline.first_change
    flips = dict(timeline.flips)
    rows = []
    for run in timeline.runs:
        notes = []
        if change and run is change[1]:
            notes.append("first change")
        follows = cite.cause_note(timeline, run.first).strip(" ()")
        if follows and run.measured:  # a flip a dependency caused (bgmatrix attribute)
            notes.append(text(follows))
        if run.first in flips:
            notes.append(part("flip")("flips back") + " to an earlier behaviour")
        if not run.measured:
            notes.append("no measurement: a gap in the evidence")
        elif run.gaps:
            notes.append(text(f"no measurement in {', '.join(run.gaps[:8])}"
                              + (" …" if len(run.gaps) > 8 else "")))
        rows.append([run_releases_html(snapshot, run, root, timeline.kind),
                     outcomes_html(run.outcomes), Markup("; ").join(notes)])
    name = "FastAPI" if timeline.kind == "fastapi" else "Starlette"
    return table([f"{name} releases", "Behaviour (verdict)", "Note"], rows)


def clause_page(
    snapshot: model.Snapshot, clause: Clause, tests: list[tuple[str, str]]
) -> str:
    root = "../"
    lines = [f"# {requirement_heading(clause)}", ""]
    lines.append(raw(citation_block(cite.clause_markdown(snapshot, clause.id))))
    lines.append(
        f"**{clause.keyword}** · {clause.level}-level · chapter "
        f"[{clause.chapter}](../spec/{clause.chapter}.md#{clause.id}) · scenarios "
        f"{', '.join(str(s) for s in clause.scenarios)} · since spec {clause.since} · "
        f"{'about #11215' if clause.in_issue else 'outside #11215'} · "
        # Filter links are raw HTML: a filter is not an anchor, so mkdocs must not check it.
        + link(f"../matrix.html#clause={clause.id}", "open in the matrix")
    )
    lines += ["", "## Spec text" + NOT_SEARCHED, "", spec_body(clause),
              releases_summary(snapshot, clause, root), ""]
    older = sorted({r["provenance"]["spec_version"] for r in snapshot.results.values()}
                   - {snapshot.spec_version})
    if older:
        stale = sum(r["provenance"]["spec_version"] != snapshot.spec_version
                    for r in snapshot.results.values())
        lines += [raw(part("message")(
            f"{stale} of {len(snapshot.results)} cells were measured against spec "
            f"{', '.join(older)}, not {snapshot.spec_version}: their verdicts below are "
            f"for that version's text of this clause"
            + (", which did not have it yet." if clause.since == snapshot.spec_version
               else "."))), ""]
    if clause.id in WIRE_NOTES:
        lines += ["## On the wire", "", WIRE_NOTES[clause.id], ""]
    lines += ["## Tests that check it" + NOT_SEARCHED, ""]
    from_results = {
        suite.test_name(t) for r in snapshot.results.values() for t in
        (r["clauses"][clause.id].get("tests", []) if clause.id in r["clauses"] else [])
    }
    defined = suite.defined_tests()
    for file, name in sorted(from_results | set(tests)):
        if (file, name) in defined:
            lines.append(f"- [`{file}::{name}`](../suite/{Path(file).stem}.md#{name}) "
                         f"(tests/spec/{file})")
        else:  # a test since renamed or removed: named, not linked
            lines.append(raw(part("note")(code(f"{file}::{name}")
                                          + text(" (named in results, no longer in the suite)"))))
    if not tests and not from_results:
        lines.append("No test checks this clause yet.")
    lines.append("")
    for kind, title in (("fastapi", "FastAPI releases"), ("starlette", "Starlette releases")):
        if kind == "starlette" and clause.level != "Starlette":
            continue
        timeline = snapshot.timeline(clause.id, kind)
        lines += [f"## Timeline across {title}" + NOT_SEARCHED, ""]
        if not timeline.runs:
            lines += ["Not measured yet.", ""]
            continue
        change = timeline.first_change
        if change:
            lines.append(raw(part("para")(
                Markup("First change in {}: {} → {}.").format(
                    text(change[1].first), outcomes_html(change[0].outcomes),
                    outcomes_html(change[1].outcomes)))))
        else:
            lines.append("The behaviour has not changed across the measured releases.\n")
        if timeline.flips:
            flipped = ", ".join(v for v, _ in timeline.flips)
            lines.append(raw(part("para")(
                part("strong")("Flips back and forth:")
                + text(f" returns to an earlier behaviour in {flipped}."), "bgm-flip")))
        # Out of the search index (each row lists every release: 1 MB of index over the
        # clauses); the page's heading, spec text and first change stay searchable.
        lines.append(unsearched(timeline_table(snapshot, timeline, root)))
    lines += attribution.clause_section(clause.id, root)
    lines += wire_rows(snapshot, clause, root)
    candidates = snapshot.cells("candidate")
    if candidates:
        lines += ["## Candidates", ""]
        rows = [[link(cell_href(root, r["cell"]["id"]), version_text(r["cell"])),
                 outcome_html(model.outcome(r, clause.id))] for r in candidates]
        lines.append(unsearched(
            table(["Candidate", "Behaviour (verdict)"], rows)))  # cells: not searched
    lines += history.clause_section(snapshot, clause.id)
    return "\n".join(lines) + "\n"


def _explained_flag(item: agreement.Disagreement, numbers: dict[str, int]) -> str:
    """``disagree (kind)``, then the number of its explanation below the table, or
    ``unexplained``."""
    flag = f"disagree ({item.kind})"
    if item.explanation is None:
        return flag + "; unexplained"
    number = numbers.setdefault(item.explanation.text, len(numbers) + 1)
    return flag + f"; explained [{number}]"


def wire_rows(snapshot: model.Snapshot, clause: Clause, root: str) -> list[str]:
    """The clause as a real client saw it through each server (wire mode), beside the raw-ASGI
    verdict, for every cell that has wire evidence of it; disagreements first, each with its
    explanation (bgmatrix/agreement.py), written once below the table."""
    differ = {(d.cell, d.server): d for d in snapshot.disagreements.get(clause.id, [])}
    numbers: dict[str, int] = {}
    rows = []
    for result in snapshot.cells():
        if clause.level != "Starlette" and result["cell"]["kind"] == "starlette":
            continue  # a FastAPI-level clause says nothing about Starlette-only cells
        mine: Mapping[str, Any] = result["clauses"].get(clause.id, {})
        for server, run in results.server_runs(result).items():
            wire = run.get("clauses", {}).get(clause.id)
            if wire is None:
                continue
            item = differ.get((result["cell"]["id"], server))
            flag = (_explained_flag(item, numbers) if item else
                    "agree" if mine.get("verdict") == wire["verdict"] else "—")
            if results.stale_reason(result, server):
                flag += " (stale: the wire method changed since)"
            raw_text = f"{mine.get('verdict', '-')} · {mine.get('label', '-')}"
            version = results.server_version(run) or "?"
            rows.append((item is None, [link(cell_href(root, result["cell"]["id"]),
                                             version_text(result["cell"])),
                                        f"{server} {version}",
                                        text(raw_text, 160),
                                        text(f"{wire['verdict']} · {wire['label']}", 160), flag]))
    if not rows:
        return []
    rows.sort(key=lambda r: r[0])  # stable: disagreements first, then release order
    items = list(differ.values())
    unexplained = sum(d.explanation is None for d in items)
    summary = (f"{len(rows)} wire runs of this clause; {len(items)} disagree with the raw "
               f"verdict or label, "
               + ("every one explained below." if not unexplained and items else
                  "none." if not items else f"{unexplained} of them unexplained."))
    lines = ["## On the wire", "",
             "Re-observed through real servers on 127.0.0.1 with an httpx client (wire mode): "
             "uvicorn (h11, asyncio), uvicorn with httptools and uvloop (`uvicorn-fast`), "
             "hypercorn, granian and daphne, each at its release current at the cell's cutoff "
             "and only where one installs. The raw-ASGI verdict stays the verdict of record. "
             + summary, "",
             unsearched(
                 part("scroll")(table(["Cell", "Server", "Raw ASGI", "Wire", ""],
                                      [r for _, r in rows]))),
             ""]
    if numbers:
        # Not searched: each explanation lists the server releases it covers (20 KB on MW-1);
        # the Servers page indexes the facts themselves.
        lines += [f"### Why the sources differ{NOT_SEARCHED}", "",
                  "Each explanation rests on a measurement: a raw schedule that gives the "
                  "server's outcome, or a fact about the server probed with no framework "
                  "(see [Servers](" + root + "servers.md)).", ""]
        for explanation, number in numbers.items():
            covered = [d for d in items if d.explanation and d.explanation.text == explanation]
            servers = ", ".join(sorted({f"{d.server} {d.version}" for d in covered},
                                       key=model.version_key))
            lines.append(f"{number}. {esc(explanation, 900)} ({len(covered)} run(s): "
                         f"{esc(servers, 600)}.)")
        lines.append("")
    return lines


def clauses_index(snapshot: model.Snapshot) -> str:
    lines = ["# Clauses", "", "Every clause of the spec with its current behaviour. "
             "Each links to its page: spec text, tests, timeline and evidence.", ""]
    for chapter in dict.fromkeys(c.chapter for c in snapshot.clauses):
        lines += [f"## {chapter.capitalize()}", ""]
        rows = []
        for clause in (c for c in snapshot.clauses if c.chapter == chapter):
            runs = [r for r in snapshot.timeline(clause.id).runs if r.measured]
            now = outcomes_html(runs[-1].outcomes) if runs else "not measured yet"
            rows.append([link(clause_href("../", clause.id), clause.id),
                         requirement(clause), now])
        # Not searched: each row's text is its clause page's and the spec's (10 KB of the
        # index's 500 KB budget); the chapter headings stay.
        lines.append(unsearched(
            table(["Clause", "Requirement", "Newest release"], rows)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Changes, downloads


def changes_page(snapshot: model.Snapshot, changes: Changes) -> str:
    lines = ["# Changes", ""]
    if changes.previous is None:
        lines += ["There is no previous published snapshot to compare with (see the "
                  "[History](history.md)), or its commit is not in this checkout.", ""]
        return "\n".join(lines) + "\n"
    prev = changes.previous
    lines += [f"This snapshot (`{snapshot.id}`, {len(snapshot.results)} cells) compared with "
              f"{esc(prev.source, 300)} ({len(prev.results)} cells).", ""]
    if changes.empty:
        lines += ["Nothing changed.", ""]

    def cells_list(ids: list[str], root_link: bool) -> Markup:
        return Markup(", ").join(link(cell_href("", c), c) if root_link else text(c) for c in ids)

    if changes.new:
        # Lists of cells and of verdicts: the cell pages are not in the search index either,
        # and a first comparison lists every cell (18 KB of the 500 KB index budget).
        lines += [f"## New cells ({len(changes.new)})" + NOT_SEARCHED, "",
                  raw(part("para")(cells_list(changes.new, True)))]
    if changes.removed:
        lines += [f"## Removed cells ({len(changes.removed)})" + NOT_SEARCHED, "",
                  raw(part("para")(cells_list(changes.removed, False)))]
    if changes.suite:
        lines += [f"## Measured with a different suite ({len(changes.suite)} cells)", "",
                  "The harness or tests changed between the snapshots: differences below may "
                  "come from the measurement rather than the release.", ""]
        pairs = Counter((b, a) for _, b, a in changes.suite)
        rows = [[code(b), code(a), n] for (b, a), n in pairs.most_common()]
        lines.append(raw(table(["Suite hash before", "after", "Cells"], rows)))
    if changes.states:
        rows = [[link(cell_href("", c), c), b, a] for c, b, a in changes.states]
        lines += [f"## Changed cell states ({len(rows)})" + NOT_SEARCHED, "",
                  raw(table(["Cell", "Before", "After"], rows))]
    if changes.verdicts:
        rows = [[link(cell_href("", c), c), link(clause_href("", k), k),
                 outcome_html(b), outcome_html(a)]
                for c, k, b, a in changes.verdicts[:ROW_LIMIT]]
        lines += [f"## Changed verdicts and labels ({len(changes.verdicts)})" + NOT_SEARCHED, "",
                  raw(table(["Cell", "Clause", "Before", "After"], rows))]
        if len(changes.verdicts) > ROW_LIMIT:
            lines.append(f"… and {len(changes.verdicts) - ROW_LIMIT} more; compare the "
                         "[downloads](downloads.md) of the two snapshots for all of them.\n")
    if prev.unreadable:
        lines += ["## Previous results that could not be read", "",
                  raw(part("items")([text(u, 300) for u in prev.unreadable[:50]]))]
    return "\n".join(lines) + "\n"


def downloads(snapshot: model.Snapshot, sizes: dict[str, int]) -> str:
    def size(name: str) -> str:
        n = sizes.get(name, 0)
        return f"{n / 1024:,.0f} KB" if n >= 1024 else f"{n} bytes"

    return "\n".join([
        "# Downloads",
        "",
        f"Snapshot `{snapshot.id}`, spec {snapshot.spec_version}, {len(snapshot.results)} cells.",
        "",
        "Both exports are gzip-compressed (`gunzip matrix.csv.gz`; pandas and most CSV tools "
        "read the `.gz` as it is).",
        "",
        f"- [matrix.json.gz](downloads/matrix.json.gz) ({size('matrix.json.gz')}): every cell "
        "with its verdict and behaviour label per clause, and the clause list.",
        f"- [matrix.schema.json](downloads/matrix.schema.json) ({size('matrix.schema.json')}): "
        "the JSON Schema of matrix.json.",
        f"- [matrix.csv.gz](downloads/matrix.csv.gz) ({size('matrix.csv.gz')}): the same, one "
        "row per "
        "cell and clause (a cell whose suite did not run has one row without a clause). "
        "Columns: cell, kind, fastapi, starlette, python, candidate, state, clause, keyword, "
        "verdict, label, suite_hash.",
        "- Raw results, with every observation and the full provenance: one JSON file per cell, "
        "linked from each [cell page](cells/index.md) (`results/<cell>.json`).",
        "",
        "Labels longer than 200 characters are truncated in the exports; the raw results keep "
        "every text whole.",
        "",
    ])


# ---------------------------------------------------------------------------------------------
# Spec and suite sources


_CLAUSE_HEAD = re.compile(r"^### ([A-Z]+-\d+) — ", re.M)


def spec_chapter(snapshot: model.Snapshot, text: str) -> str:
    """A spec chapter with each clause's "*Releases.*" line, generated from the results, at
    the end of the clause's section."""
    out, pos = [], 0
    heads = list(_CLAUSE_HEAD.finditer(text))
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out.append(text[pos:head.start()])
        section = text[head.start():end]
        clause = snapshot.clause_by_id.get(head.group(1))
        if clause is not None:
            # The heading links to the clause's evidence page (its anchor stays the ID).
            heading, _, rest = section.partition("\n")
            match = re.match(r"^### (.+?) (\{#[A-Z]+-\d+\})$", heading)
            if match:
                heading = (f"### [{match.group(1)}](../clauses/{clause.id}.md "
                           f'"{clause.id}: evidence, timeline and tests") {match.group(2)}')
            section = (heading + "\n" + rest.rstrip("\n") + "\n\n"
                       + releases_summary(snapshot, clause, "../") + "\n\n")
        out.append(section)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def suite_page(path: Path, source: str, marks: dict[str, list[str]],
               known: Collection[str]) -> str:
    """A test file of the suite, split at its top-level definitions so each test has an
    anchor that the clause pages link to; ``marks`` (test -> clauses) comes from the results'
    test records (``suite.marks_by_test``).  A clause ID the spec no longer has (results
    measured against an earlier spec version) links to the spec's withdrawn IDs instead."""
    chunks = suite.split_source(source)
    out = [
        SEARCH_EXCLUDED + f"# tests/spec/{path.name}",
        "",
        "The spec suite runs this file inside every cell. Each test names the clauses it "
        "checks with `@pytest.mark.clause(...)`.",
    ]
    for name, source_text in chunks:
        if name and name in marks:
            # A Markdown heading (names are identifiers), so mkdocs checks links to its anchor.
            clauses = ", ".join(
                f"[{c}](../clauses/{c}.md)" if c in known
                else f"[{c}](../spec/index.md#withdrawn) (not in spec {spec.spec_version()})"
                for c in marks[name])
            out += ["", f"### `{name}` {{#{name}}}", "", f"Checks {clauses}."]
        out.append(raw(part("pre")(source_text.rstrip("\n"), None, "bgm-pre bgm-source")))
    return "\n".join(out)
