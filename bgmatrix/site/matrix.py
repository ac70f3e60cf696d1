"""The matrix page's data: every cell's outcome per clause, compact enough to embed in one page.

The page ships this data inline and ``site/docs/js/matrix.js`` draws the table from it, folding
consecutive releases with identical outcomes and applying the filters named in the URL. So the
matrix needs no request per cell, and a filtered view is just a link.
"""

from __future__ import annotations

import re
from collections import Counter

from markupsafe import Markup

from bgmatrix.results import Result
from bgmatrix.site import model
from bgmatrix.site.markup import clean
from bgmatrix.site.render import part, verdict_class

#: Codes for the conflict vocabulary of spec/resolution.md#labels, the labels readers look for.
KNOWN_CODES = {
    "drop": "D",
    "warn": "W",
    "merge": "M",
    "merge-reordered": "MR",
    "warn+merge": "WM",
    "warn+merge-reordered": "WMR",
    "duplicate": "2×",
    "lost-all": "L",
    "replace": "R",
    "warn+replace": "WR",
    "partial": "P",
    "warn+partial": "WP",
    "n/a": "–",
}
#: Codes for outcomes that are not measurements.
STATE_CODES = {
    "install-error": "IE",
    "no-interpreter": "NI",
    "import-error": "IM",
    "harness-error": "HE",
    "timeout": "TO",
    "missing": "·",
}
LABEL_LIMIT = 200  # characters of a label kept in the page data


def _base_code(label: str) -> str:
    if label in KNOWN_CODES:
        return KNOWN_CODES[label]
    if label != model.conflict_part(label) and model.conflict_part(label) in KNOWN_CODES:
        return KNOWN_CODES[model.conflict_part(label)]
    words = re.findall(r"[A-Za-z0-9]+", label)
    if not words:
        return "?"
    if len(words) == 1:
        return words[0][:3].lower()
    return "".join(w[0] for w in words[:3]).upper()


def outcome_codes(outcomes: list[model.Outcome]) -> dict[model.Outcome, str]:
    """A short, unique code per outcome; the commonest label keeps the plain code."""
    codes: dict[model.Outcome, str] = {}
    by_label: dict[str, str] = {}
    used: set[str] = set()
    for verdict, label in outcomes:
        if not model.is_measured((verdict, label)):
            codes[(verdict, label)] = STATE_CODES.get(verdict, "!")
            continue
        if label not in by_label:
            base = _base_code(label)
            code, n = base, 1
            while code in used:
                n += 1
                code = f"{base}{n}"
            used.add(code)
            by_label[label] = code
        codes[(verdict, label)] = by_label[label]
    return codes


def _sections(snapshot: model.Snapshot) -> list[tuple[str, str, list[Result]]]:
    """(key, title, cells): one section per Starlette line for FastAPI cells, then the pure
    Starlette cells, then the candidates."""
    lines: dict[str, list[Result]] = {}
    for result in snapshot.cells("fastapi"):
        lines.setdefault(clean(model.line_of(result["cell"]["starlette"]), 40), []).append(result)
    out = [
        (f"st-{line}", f"FastAPI releases with Starlette {line}.x", cells)
        for line, cells in sorted(lines.items(), key=lambda kv: model.version_key(kv[0]))
    ]
    if snapshot.cells("starlette"):
        out.append(("starlette", "Starlette releases on their own", snapshot.cells("starlette")))
    if snapshot.cells("candidate"):
        out.append(("candidates", "Candidate resolutions", snapshot.cells("candidate")))
    return out


def matrix_data(snapshot: model.Snapshot) -> dict:
    """The page data: clauses, interned outcomes with codes, sections and one row per cell."""
    ids = [c.id for c in snapshot.clauses]
    counts = Counter(model.outcome(r, cid) for r in snapshot.results.values() for cid in ids)
    ordered = [o for o, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    codes = outcome_codes(ordered)
    index = {o: i for i, o in enumerate(ordered)}
    releases = snapshot.planned["fastapi"]
    release_index = {v: i for i, v in enumerate(releases)}
    sections = _sections(snapshot)
    cells = []
    for s, (_, _, members) in enumerate(sections):
        for result in members:
            cell = result["cell"]
            cells.append(
                [
                    cell["id"],
                    cell["kind"],
                    clean(cell["fastapi"] or "", 40),
                    clean(cell["starlette"] or "", 40),
                    cell["python"],
                    s,
                    release_index.get(cell["fastapi"] or "", -1),
                    result["state"],
                    [index[model.outcome(result, cid)] for cid in ids],
                    clean(cell["candidate"] or "", 80),
                ]
            )
    return {
        "snapshot": snapshot.id,
        "clauses": [[c.id, c.title, c.chapter, c.level, c.keyword] for c in snapshot.clauses],
        "outcomes": [
            [clean(v, LABEL_LIMIT), clean(lb, LABEL_LIMIT), clean(codes[(v, lb)], 12),
             verdict_class(v)]
            for v, lb in ordered
        ],
        "sections": [[key, title] for key, title, _ in sections],
        "releases": [clean(v, 40) for v in releases],
        "lines": sorted({clean(model.line_of(r["cell"]["starlette"]), 40) for r in snapshot.cells()
                         if r["cell"]["starlette"]}, key=model.version_key),
        "cells": cells,
    }


def legend_html(data: dict) -> Markup:
    """Verdict colours and every code used, with its full label (escaped: labels are data)."""
    swatches = [
        ("v-ok", "conforms"),
        ("v-dev", "deviates"),
        ("v-na", "n/a (the release lacks the feature)"),
        ("v-fail", "no measurement: the cell's suite did not run (state code shown)"),
        ("v-none", "not measured (result predates the clause)"),
    ]
    seen: dict[str, set[str]] = {}
    for verdict, label, code, _ in data["outcomes"]:
        seen.setdefault(code, set()).add(label or verdict)
    codes = [(code, ", ".join(sorted(labels)))
             for code, labels in sorted(seen.items(), key=lambda kv: kv[0].lower())]
    return part("legend")(swatches, codes)
