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
import os
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from bgmatrix import results, vocabulary
from bgmatrix.results import Result
from bgmatrix.site import cite, model, releases
from bgmatrix.site.markup import clean, json_for_script
from bgmatrix.site.pages import NO_RESULTS
from bgmatrix.site.render import (
    LEAN_SEARCH_EXCLUDED,
    SEARCH_EXCLUDED,
    cell_href,
    citation_block,
    clause_href,
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


def cell_page(snapshot: model.Snapshot, result: Result) -> str:
    root = "../"
    cell, prov = result["cell"], result["provenance"]
    lines = [LEAN_SEARCH_EXCLUDED + f"# {safe_title(cell)}", ""]
    clause_id = cite.default_clause(snapshot, result)
    shown = shown_tests(result, clause_id)  # the records this page carries
    notable = notable_items(snapshot, result)
    if notable:
        lines += ["## What is notable", "", raw(part("notable", releases.TEMPLATE)(notable))]
    lines.append(raw(citation_block(cite.cell_markdown(snapshot, clause_id, cell["id"]))))
    lines.append(raw(cite_picker(snapshot, result, clause_id)))
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
            conforming.append(link(clause_href(root, clause.id), clause.id) + " "
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
        rows.append(_verdict_row(link(clause_href(root, clause.id), clause.id)
                                 + " " + text(clause.keyword), entry, tests))
    for cid in sorted(set(result["clauses"]) - set(snapshot.clause_by_id)):
        rows.append(_verdict_row(text(f"{cid} (not in this spec)"), result["clauses"][cid],
                                 Markup("")))
    for reason, ids in untested.items():
        names = Markup(", ").join(link(clause_href(root, c), c) for c in ids)
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
        lines += wire_section(root, result)
    lines += ["## Evidence", ""]
    rest = len(result["tests"]) - len(shown)
    lines.append(raw(part("para")(Markup(
        "The record of each test behind {} and of any test that did not finish normally, "
        "up to {:,} characters each. The raw result keeps every record{}; "
        "<code>bgmatrix show {} --evidence</code> prints them all, uncut.").format(
            link(clause_href(root, clause_id), clause_id), TEST_LIMIT,
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
            Markup(", ").join(link(clause_href(root, f.hazard.clause), f.hazard.clause)
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
            link(clause_href(root, cid), cid), outcome_html(mine), name,
            " and ".join(differ)))
    if len(changes) > NOTABLE_LIMIT:
        items.append(Markup(f"… and {len(changes) - NOTABLE_LIMIT} more changes from the "
                            "neighbouring releases (see the verdicts below)."))
    return items


def cite_heads_script(snapshot: model.Snapshot) -> str:
    """js/cite-heads.js: the first line of a cell citation for every clause (see cite_picker);
    the lean template loads it on cell pages."""
    return ("/* Generated by bgmatrix report: the first line of a cell citation per clause. */\n"
            f"window.bgmCiteHeads = {json_for_script(cite.cell_citation_heads(snapshot))};\n")


def cite_picker(snapshot: model.Snapshot, result: Mapping[str, Any], default: str) -> Markup:
    """A select that turns the citation above into one for any clause the cell measured.
    The data gives each clause, in spec order, as [verdict, change]: the change is None for
    the cited clause, else the lines that differ from the default citation, each as its
    change from that line (``_delta``); a first line that is the clause's own
    (``cite.cell_citation_heads``, shipped once as js/cite-heads.js) is left out.
    js/releases.js makes the options and puts the lines in place."""
    cell_id = result["cell"]["id"]
    base = cite.cell_markdown(snapshot, default, cell_id).split("\n")
    heads = cite.cell_citation_heads(snapshot)  # ~70 short strings: cheap per page
    data: dict[str, list[Any]] = {}
    for clause in snapshot.clauses:
        entry = result["clauses"].get(clause.id)
        if entry is None or (entry["verdict"] == "n/a" and not entry["tests"]):
            continue
        change: dict[str, Any] | None = None
        if clause.id != default:
            lines = cite.cell_markdown(snapshot, clause.id, cell_id).split("\n")
            if len(lines) != len(base):
                change = {"*": "\n".join(lines)}
            else:
                change = {str(i): _delta(line, was)
                          for i, (line, was) in enumerate(zip(lines, base))
                          if line != was and not (i == 0 and line == heads[clause.id])}
        data[clause.id] = [entry["verdict"], change]
    if len(data) < 2 or default not in data:
        return Markup("")
    return part("cite_picker", releases.TEMPLATE)(default, data[default][0],
                                                  Markup(json_for_script(data)))


def _delta(line: str, base: str) -> list[Any]:
    """``line`` as [p, s, middle]: the first p and last s characters of ``base`` around
    ``middle`` (js/releases.js rebuilds it). The lines of one cell's citations share their
    cell title and their ends, which made most of each page's citation data."""
    p = len(os.path.commonprefix([line, base]))
    s = len(os.path.commonprefix([line[p:][::-1], base[p:][::-1]]))
    return [p, s, line[p:len(line) - s]]


def wire_section(root: str, result: Result) -> list[str]:
    """Raw-ASGI and wire (a real server and client) evidence side by side, one table per
    server, disagreements flagged: the second source confirms or qualifies the first."""
    lines = ["## Wire evidence", ""]
    for server, run in results.server_runs(result).items():
        section = result["wire"] if server == "uvicorn" else result["servers"]
        version = run.get("uvicorn") or run.get("version") or "?"
        lines.append(raw(part("para")(text(
            f"{server} {version} on 127.0.0.1 with an httpx client: {run['state']}"
            + (f" — {run['message']}" if run.get("message") else ""), 600))))
        if section.get("stale"):  # kept by a run that did not re-measure it (carry_over)
            lines.append(raw(part("para")(text("Stale: " + section["stale"], 600))))
        differ = {d["clause"]: d
                  for d in vocabulary.disagreements(result["clauses"], run["clauses"])}
        rows = []
        for cid, entry in sorted(run["clauses"].items()):
            mine: Mapping[str, Any] = result["clauses"].get(cid, {})
            flag = (f"disagree ({differ[cid].get('kind', '')})" if cid in differ
                    else "agree" if mine.get("verdict") == entry["verdict"] else "—")
            rows.append([link(clause_href(root, cid), cid),
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
