"""Cell pages: one per result, with its verdicts, the evidence behind the clause it cites,
and the provenance.

Evidence reads like an h2spec report: for each test shown, what it checked, what the spec
expected and what was observed (warnings, the exception that left the application, the
ordered ASGI event log). Every other test's record is a pinned link away (the raw result) and
``bgmatrix show CELL --evidence`` prints them all. Evidence text is cleaned and cut here
(``markup.clean``) and escaped where it lands, by the templates (``render``); the raw result,
linked from the page, keeps every character.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from bgmatrix import agreement, results
from bgmatrix.results import Result
from bgmatrix.site import attribution, cite, model, releases
from bgmatrix.site.markup import clean, json_for_script
from bgmatrix.site.pages import NO_RESULTS
from bgmatrix.site.render import (
    SEARCH_EXCLUDED,
    cell_href,
    citation_block,
    clause_href,
    clause_link,
    link,
    outcome_html,
    part,
    raw,
    safe_title,
    table,
    text,
    version_text,
)

EVENT_LIMIT = 300  # events shown per exchange; the raw result has them all
BODY_LIMIT = 600  # characters of a response body shown
#: Characters of one shown test record (see ``shown_tests``): its outcome and verdicts, then
#: its observations; the raw result, linked, keeps all of it.
TEST_LIMIT = 4_000


def is_exchange(value: object) -> bool:
    return isinstance(value, dict) and "events" in value and "status" in value


# A test's evidence is one text block, h2spec style: what was checked, what was expected, what
# was observed. One block per test, not a table per event: a full matrix has hundreds of cell
# pages with dozens of tests each, and every element costs time in Markdown's and mkdocs' HTML
# parsers.


# One encoder for every value shown: json.dumps with options builds a new encoder per call,
# and indenting falls back to the pure-Python encoder; hundreds of thousands of event fields
# on a full matrix make both visible.
_json = json.JSONEncoder(ensure_ascii=False, default=str, separators=(", ", ": ")).encode


def _indented(text: str, limit: int) -> list[str]:
    return ["    " + line for line in clean(text, limit).splitlines() or [""]]


def exchange_text(ex: dict) -> list[str]:
    effects = ", ".join(clean(e, 80) for e in (ex.get("effects") or [])) or "none"
    out = [f"  status {clean(ex.get('status'), 20)} · tasks that ran, in order: {effects}"]
    warnings = ex.get("warnings") or []
    if not warnings:
        out.append("  warnings: none")
    for w in warnings[:50]:
        w = w if isinstance(w, dict) else {"message": w}
        out.append(f"  warning {clean(w.get('category', '?'), 120)}:")
        out += _indented(w.get("message", ""), 1000)
    if len(warnings) > 50:
        out.append(f"  … {len(warnings) - 50} more warnings in the raw result")
    if ex.get("app_exception"):
        out.append("  exception that left the application:")
        out += _indented(ex["app_exception"], 3000)
    headers = ex.get("headers") or []
    if headers:
        out.append("  headers: " + "; ".join(
            f"{clean(h[0], 200)}: {clean(h[1], 300)}" if isinstance(h, list) and len(h) > 1
            else clean(h, 300) for h in headers[:40]))
    if ex.get("body") not in (None, ""):
        out.append("  body: " + clean(_json(ex["body"]), BODY_LIMIT))
    events = ex.get("events") or []
    out.append(f"  event log ({len(events)} events, in order):")
    for event in events[:EVENT_LIMIT]:
        if not isinstance(event, dict):
            out.append("    " + clean(event, 300))
            continue
        detail = " ".join(f"{k}={_json(v)}"
                          for k, v in event.items() if k not in ("seq", "kind"))
        out.append(f"    {clean(event.get('seq', ''), 10):>4}  "
                   f"{clean(event.get('kind', ''), 40):<14} {clean(detail, 400)}")
    if len(events) > EVENT_LIMIT:
        out.append(f"    … {len(events) - EVENT_LIMIT} more events in the raw result")
    rest = {k: v for k, v in ex.items()
            if k not in ("status", "effects", "warnings", "app_exception", "headers", "body",
                         "events")}
    if rest:
        out.append("  other fields: " + clean(_json(rest), 500))
    return out


def observation_text(key: str, value: object) -> list[str]:
    out = [f"observed {clean(key, 120)}:"]
    if is_exchange(value):
        return out + exchange_text(value)  # type: ignore[arg-type]
    if isinstance(value, list) and value and all(is_exchange(v) for v in value):
        for i, ex in enumerate(value[:20]):
            out += [f" request {i + 1} of {len(value)}:"] + exchange_text(ex)
        return out
    data = _json(value)
    return out + _indented(data, 4000)


def evidence_text(test: Mapping[str, Any]) -> str:
    out = [f"outcome: {clean(test['outcome'], 40)}"]
    for cid, v in test["verdicts"].items():
        v = v if isinstance(v, dict) else {}
        expected = v.get("expected") or v.get("reason") or ""
        out.append(f"{clean(cid, 40)}: observed {clean(v.get('label', ''), 300)} "
                   f"({clean(v.get('verdict', '?'), 20)}); expected: {clean(expected, 300)}")
    if test["error"]:
        out.append("error:")
        out += _indented(test["error"], 4000)
    for key, value in test["observations"].items():
        out += observation_text(key, value)
    return "\n".join(out)


def shown_tests(result: Result, clause_id: str) -> list[int]:
    """The tests whose records a cell page shows: those behind the clause it cites, and any
    that failed or errored. ~90 records on each of ~700 pages kept the site far over its
    weight budget; the rest are linked (the raw result, pinned) and printed by ``show``."""
    return [i for i, t in enumerate(result["tests"])
            if clause_id in t["verdicts"] or t["outcome"] != "ok" or t["error"]]


def cell_page(snapshot: model.Snapshot, result: Result, cite_data: CiteData | None = None
              ) -> str:
    """``cite_data``: the snapshot's :class:`CiteData`, made once for every page (made here
    when not given)."""
    root = "../"
    cell, prov = result["cell"], result["provenance"]
    lines = [CELL_FRONT_MATTER + f"# {safe_title(cell)}", ""]
    clause_id = cite.default_clause(snapshot, result)
    shown = shown_tests(result, clause_id)  # the records this page carries
    notable = notable_items(snapshot, result)
    if notable:
        lines += ["## What is notable", "", raw(part("notable", releases.TEMPLATE)(notable))]
    lines.append(raw(citation_block(cite.cell_markdown(snapshot, clause_id, cell["id"]))))
    lines.append(raw(cite_picker(snapshot, result, clause_id, cite_data)))
    conflict = model.outcome(result, model.CONFLICT_CLAUSE)
    summary = [
        Markup("State: ") + part("strong")(result["state"]),
        Markup("conflict behaviour ({}): {}").format(model.CONFLICT_CLAUSE,
                                                     outcome_html(conflict)),
        link(cite.result_url(cell["id"], snapshot), "raw result (JSON)"),
        link(f"{root}matrix.html", "matrix"),
    ]
    lines.append(raw(part("para")(Markup(" · ").join(summary))))
    measured = prov["spec_version"]
    if measured != snapshot.spec_version:
        # Never shown as if it were the current spec: clauses added since are not in it, and
        # IDs withdrawn since may be.
        lines.append(raw(part("message")(
            f"Measured against spec {measured}, not the current spec "
            f"{snapshot.spec_version}: clauses added since are not measured in this cell "
            f"until it is re-run.")))
    if result["message"]:
        lines.append(raw(part("message")(result["message"])))
    # Markup is counted (see templates/parts.html, verdict_table and tests_block).
    lines += ["## Verdicts", ""]
    test_ids = {result["tests"][i]["test"]: i for i in shown}
    rows = []
    untested: dict[str, list[str]] = {}  # reason -> clauses n/a because no test ran
    conforming: list[Markup] = []  # conforming clauses whose evidence is not on this page
    for clause in snapshot.clauses:
        entry = result["clauses"].get(clause.id)
        if entry is None:
            continue
        if entry["verdict"] == "n/a" and not entry["tests"]:
            untested.setdefault(entry.get("reason", ""), []).append(clause.id)
            continue
        if entry["verdict"] == "conforms" and not (entry["tests"]
                                                    and entry["tests"][0] in test_ids):
            # What the spec requires, so one short item each; the table keeps the rest.
            conforming.append(clause_link(root, clause.id) + " "
                              + text(entry["label"], 120))
            continue
        # The first test links to the evidence; the others follow it on the page.
        first = entry["tests"][0] if entry["tests"] else None
        tests = Markup("")
        if first is not None:
            name = text(first.split("::")[-1], 120)
            tests = link(f"#t-{test_ids[first]}", name) if first in test_ids else name
            if len(entry["tests"]) > 1:
                tests += f" and {len(entry['tests']) - 1} more"
        rows.append(_verdict_row(clause_link(root, clause.id)
                                 + " " + text(clause.keyword), entry, tests))
    for cid in sorted(set(result["clauses"]) - set(snapshot.clause_by_id)):
        rows.append(_verdict_row(text(f"{cid} (not in this spec)"), result["clauses"][cid],
                                 Markup("")))
    for reason, ids in untested.items():
        names = Markup(", ").join(clause_link(root, c) for c in ids)
        rows.append(_verdict_row(names, {"verdict": "n/a", "label": "n/a", "reason": reason},
                                 Markup("")))
    if rows:
        lines.append(raw(part("verdict_table")(rows)))
    if conforming:
        lines.append(raw(part("para")(
            Markup("<strong>Conforms ({}):</strong> ").format(len(conforming))
            + Markup(" · ").join(conforming))))
    if not rows and not conforming:
        lines.append("No clause verdicts: the suite did not run to completion.\n")
    if "wire" in result:
        lines += wire_section(root, result, snapshot.probes)
    lines += attribution.cell_section(result["cell"]["id"], root)
    lines += ["## Evidence", ""]
    rest = len(result["tests"]) - len(shown)
    lines.append(raw(part("para")(Markup(
        "The record of each test behind {} and of any test that did not finish normally, "
        "up to {:,} characters each. The raw result keeps every record{}; "
        "<code>bgmatrix show {} --evidence</code> prints them all, uncut.").format(
            clause_link(root, clause_id), TEST_LIMIT,
            Markup(", the other {} included").format(rest) if rest else "",
            text(cell["id"], 200)))))
    if shown:
        # One enclosing element: Markdown handles each top-level element of a raw block on
        # its own, which costs more than the elements themselves.
        lines.append(raw(part("tests_block")(
            [(i, result["tests"][i]["test"], evidence_text(result["tests"][i]))
             for i in shown], TEST_LIMIT)))
    elif not result["tests"]:
        lines.append("No test records.\n")
    lines += ["## Provenance", ""]
    facts = [
        ("Cell", text(cell["id"])),
        ("Kind", text(cell["kind"])),
        ("Python", text(prov.get("python") or cell["python"], 60)),
        ("Implementation", text(prov.get("implementation") or "–", 60)),
        ("FastAPI installed", text(prov.get("fastapi") or "–", 60)),
        ("Starlette installed", text(prov.get("starlette") or "–", 60)),
        ("Inside FastAPI's declared Starlette range",
         {True: "yes", False: "no", None: "not applicable"}[cell["in_declared_range"]]),
        ("Resolver cutoff", text(cell["cutoff"] or "–", 60)),
        ("Spec version", text(prov["spec_version"], 40)),
        ("Suite hash", text(prov["suite_hash"], 80)),
        ("Suite tools", text(", ".join(prov.get("suite_tools") or []), 500)),
        ("Tools", text(", ".join(f"{k} {v}" for k, v in sorted(prov["tools"].items())), 800)),
        # When and on which host: the run record (results/run.json), not the cell's file.
    ]
    lines.append(raw(table(["", ""], [[k, v] for k, v in facts], class_="bgm-table bgm-kv")))
    packages = prov.get("packages") or {}
    lines += [f"### Resolved packages ({len(packages)})", ""]
    freeze = "\n".join(f"{clean(n, 200)}=={clean(v, 100)}" for n, v in sorted(packages.items()))
    lines.append(raw(part("pre")(freeze, None)) if packages else "None recorded.\n")
    return "\n".join(lines) + "\n"


NOTABLE_LIMIT = 12  # changes listed at the top of a cell page; the verdict table has them all


def _neighbours(snapshot: model.Snapshot, result: Mapping[str, Any]
                ) -> tuple[str, list[tuple[str, list[Any]]]]:
    """The release kind of the cell and its measured neighbouring releases (before, after)."""
    cell = result["cell"]
    kind = "starlette" if cell["kind"] == "starlette" else "fastapi"
    order = list(snapshot.by_release(kind).items())
    version = cell[kind]
    at = next((i for i, (v, _) in enumerate(order) if v == version), None)
    if at is None:
        return kind, []
    return kind, [order[i] for i in (at - 1, at + 1) if 0 <= i < len(order)]


def notable_items(snapshot: model.Snapshot, result: Mapping[str, Any]) -> list[Markup]:
    """What sets this cell's release apart: its hazards (``releases``), then the clauses
    whose verdict differs from both neighbouring releases, or from the one it follows."""
    if result["state"] != "ok" or result["cell"]["kind"] == "candidate":
        return []
    root = "../"
    items: list[Markup] = []
    found = releases.cell_hazards(snapshot, result)
    if found:
        version = result["cell"]["fastapi"]
        items.append(Markup("Hazards of this release: {} — {}.").format(
            Markup(", ").join(clause_link(root, f.hazard.clause)
                              for f in found),
            link(releases.page_href(root, version), "what they mean and the safe patterns")))
    kind, around = _neighbours(snapshot, result)
    name = "FastAPI" if kind == "fastapi" else "Starlette"
    changes = []
    for clause in snapshot.clauses:
        mine = model.outcome(result, clause.id)
        if mine[0] not in ("conforms", "deviates"):
            continue
        others = [(v, snapshot.release_outcomes(cells, clause.id)) for v, cells in around]
        others = [(v, outs) for v, outs in others if any(model.is_measured(o) for o in outs)]
        differ = [v for v, outs in others if mine not in outs]
        if not others or not differ:
            continue
        if len(differ) < len(others) and mine[0] != "deviates":
            continue  # a change that only continues: shown on the release where it started
        changes.append((mine[0] != "deviates", clause.id, mine, differ))
    changes.sort(key=lambda c: c[0])  # deviations first
    for _, cid, mine, differ in changes[:NOTABLE_LIMIT]:
        items.append(Markup("{} {}, unlike {} {}.").format(
            clause_link(root, cid), outcome_html(mine), name,
            " and ".join(differ)))
    if len(changes) > NOTABLE_LIMIT:
        items.append(Markup(f"… and {len(changes) - NOTABLE_LIMIT} more changes from the "
                            "neighbouring releases (see the verdicts below)."))
    return items


#: The script the lean template loads on cell pages only (site/overrides/lean.html).
CITE_DATA_SCRIPT = "js/cite-data.js"
#: A cell page's front matter: the lean template, out of the search index, and the shared
#: citation data loaded (``cite_data``).
CELL_FRONT_MATTER = ("---\ntemplate: lean.html\ncite_data: true\nsearch:\n  exclude: true\n"
                     "---\n\n")


@dataclass
class CiteData:
    """What the cell pages' citation picker needs to write a cell's citation of any clause.

    A cell citation is three lines (``cite.cell_markdown``): the clause's line, the same on
    every cell page; the cell's title and what it did (``cite.cell_outcome_text``), a text
    that hundreds of cells share; the snapshot and the cell's links, the same for every clause
    of one cell. So the shared file (:data:`CITE_DATA_SCRIPT`) holds each clause's first line
    and its distinct outcome texts, and a page holds, per clause, only the index of its text:
    the data was 6.6 KB on each of ~700 pages (4.6 MB), the shared file is loaded once."""

    clauses: list[str]  # spec order
    heads: list[str]  # each clause's first line
    texts: list[list[tuple[str, str]]]  # each clause's distinct (verdict, outcome text)
    cells: dict[str, list[int]]  # per cell, per clause: an index into texts, -1 not citable

    @classmethod
    def of(cls, snapshot: model.Snapshot) -> CiteData:
        heads = cite.cell_citation_heads(snapshot)
        clauses = [c.id for c in snapshot.clauses]
        found: list[dict[tuple[str, str], int]] = [{} for _ in clauses]
        cells: dict[str, list[int]] = {}
        for result in snapshot.cells():
            cell_id = result["cell"]["id"]
            row = []
            for i, cid in enumerate(clauses):
                entry = result["clauses"].get(cid)
                if entry is None or (entry["verdict"] == "n/a" and not entry["tests"]):
                    row.append(-1)
                    continue
                key = (entry["verdict"], cite.cell_outcome_text(snapshot, cid, cell_id))
                row.append(found[i].setdefault(key, len(found[i])))
            cells[cell_id] = row
        return cls(clauses, [heads[c] for c in clauses], [list(f) for f in found], cells)

    def script(self) -> str:
        """js/cite-data.js: a global, not a fetch, so it works from disk too."""
        data = {"clauses": self.clauses, "heads": self.heads, "texts": self.texts}
        return ("/* Generated by bgmatrix report: the cell pages' citation picker data "
                "(bgmatrix/site/cell_pages.py, CiteData). */\n"
                f"window.bgmCite = {json_for_script(data)};\n")

    def page_data(self, snapshot: model.Snapshot, cell_id: str) -> dict[str, Any]:
        """A page's own part: the start of its second line (``> <cell title>: ``) and the
        index of each clause's outcome text."""
        cell = snapshot.results[cell_id]["cell"]
        return {"p": f"> {cite.cell_title(cell)}: ", "c": self.cells[cell_id]}

    def citation(self, snapshot: model.Snapshot, cell_id: str, clause_id: str) -> str:
        """The citation js/releases.js writes from this data; the same as
        ``cite.cell_markdown`` (the tests check that, here and in the browser)."""
        i = self.clauses.index(clause_id)
        text = self.texts[i][self.cells[cell_id][i]][1]
        return "\n".join([self.heads[i], self.page_data(snapshot, cell_id)["p"] + text + " \\",
                          "> " + cite.cell_source_line(snapshot, cell_id)])


def cite_picker(snapshot: model.Snapshot, result: Mapping[str, Any], default: str,
                data: CiteData | None = None) -> Markup:
    """A select that turns the citation above into one for any clause the cell measured:
    the page carries the cited clause's option and :meth:`CiteData.page_data`; js/releases.js
    makes the other options and their citations from it and the shared :data:`CITE_DATA_SCRIPT`."""
    data = data or CiteData.of(snapshot)
    cell_id = result["cell"]["id"]
    row = data.cells.get(cell_id, [])
    citable = [cid for cid, k in zip(data.clauses, row) if k >= 0]
    if len(citable) < 2 or default not in citable:
        return Markup("")
    verdict = result["clauses"][default]["verdict"]
    return part("cite_picker", releases.TEMPLATE)(
        default, verdict, Markup(json_for_script(data.page_data(snapshot, cell_id))))


def wire_section(root: str, result: Result,
                 probes: Mapping[str, Any] | None = None) -> list[str]:
    """Raw-ASGI and wire (a real server and client) evidence side by side, one table per
    server, disagreements flagged with their explanation (bgmatrix/agreement.py): the second
    source confirms or qualifies the first."""
    lines = ["## Wire evidence", ""]
    for server, run in results.server_runs(result).items():
        version = results.server_version(run) or "?"
        lines.append(raw(part("para")(text(
            f"{server} {version} on 127.0.0.1 with an httpx client: {run['state']}"
            + (f" — {run['message']}" if run.get("message") else ""), 600))))
        stale = results.stale_reason(result, server)
        if stale:  # kept by a run that did not re-measure it (carry_over)
            lines.append(raw(part("para")(text("Stale: " + stale, 600))))
        differ = {d.clause: d for d in agreement.disagreements(result, probes)
                  if d.server == server}
        rows = []
        for cid, entry in sorted(run["clauses"].items()):
            mine: Mapping[str, Any] = result["clauses"].get(cid, {})
            item = differ.get(cid)
            flag: Any = ("agree" if mine.get("verdict") == entry["verdict"] else "—")
            if item:  # the sentence itself is on the clause page, once for every cell
                basis = item.explanation.basis if item.explanation else None
                why: Any = "unexplained" if basis is None else link(
                    clause_href(root, cid) + "#why-the-sources-differ",
                    "explained by a raw schedule" if basis == "schedule"
                    else f"explained by the server fact {basis}")
                flag = Markup("disagree ({}): {}").format(item.kind, why)
            rows.append([clause_link(root, cid),
                         text(f"{mine.get('verdict', '-')} · {mine.get('label', '-')}", 200),
                         text(f"{entry['verdict']} · {entry['label']}", 200), flag])
        if rows:
            lines.append(raw(table(["Clause", "Raw ASGI", server, ""], rows)))
        lines.append("")
    return lines


def _verdict_row(clause_html: Markup, entry: Mapping[str, Any], tests_html: Markup) -> tuple:
    """One row of a cell's verdict table (``verdict_table`` in templates/parts.html): the
    behaviour cell is coloured by its verdict."""
    return (clause_html, entry["verdict"], entry["label"], entry.get("reason") or "", tests_html)


def cells_index(snapshot: model.Snapshot) -> str:
    lines = [SEARCH_EXCLUDED + "# Cells", "",
             "Every measured cell: one release pair on one interpreter. "
             "The raw result is the JSON file the suite wrote.", ""]
    if not snapshot.results:
        lines += [f"**{NO_RESULTS}**", ""]
        return "\n".join(lines) + "\n"
    rows = [[link(cell_href("../", r["cell"]["id"]), r["cell"]["id"]),
             r["cell"]["kind"], version_text(r["cell"]), r["state"],
             outcome_html(model.outcome(r, model.CONFLICT_CLAUSE)),
             link(f"../results/{r['cell']['id']}.json", "JSON")]
            for r in snapshot.cells()]
    lines.append(raw(table(
        ["Cell", "Kind", "Versions", "State", f"Conflict ({model.CONFLICT_CLAUSE})", "Raw"], rows)))
    return "\n".join(lines) + "\n"
