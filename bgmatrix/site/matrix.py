"""The matrix page's data: every cell's outcome per clause, compact enough to embed in one page.

The page ships this data inline and ``site/docs/js/matrix.js`` draws the table from it: one row
per range of FastAPI releases that behave the same (whatever Starlette line they ran with; the
Starlette versions are a column, and the line a filter), then the pure Starlette cells, then
the candidates; filters are named in the URL. So the matrix needs no request per cell, and a
filtered view is just a link.

Every cell reads without the legend: a glyph for the verdict (✓ conforms, ✗ deviates, – n/a,
! no measurement, · not measured) and a short word for the behaviour, read from the label itself
(``param:drop decorator:drop ...`` is "drop"); the full label is the cell's tooltip.
"""

from __future__ import annotations

import re
from collections import Counter

from markupsafe import Markup

from bgmatrix.results import Result
from bgmatrix.site import model
from bgmatrix.site.markup import clean
from bgmatrix.site.render import part, verdict_class

#: Words for outcomes that are not measurements (the cell's state, or a clause it predates).
STATE_WORDS = {
    "install-error": "install error",
    "no-interpreter": "no Python",
    "import-error": "import error",
    "harness-error": "harness error",
    "timeout": "timeout",
    "missing": "not measured",
}
#: Glyph per verdict class: the verdict never rests on colour alone.
GLYPHS = {"v-ok": "✓", "v-dev": "✗", "v-na": "–", "v-fail": "!", "v-none": "·"}
#: Labels that open with a phrase keep the phrase (``same (...)``, ``differs from handler ...``).
PHRASES = (("same as handler", "same"), ("same", "same"), ("differs from handler", "differs"),
           ("schedule-dependent", "schedule-dependent"))
WORD_LIMIT = 18  # characters of a word in a cell; the tooltip has the whole label
LABEL_LIMIT = 200  # characters of a label kept in the page data
SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def short_word(verdict: str, label: str) -> str:
    """A few characters that say what a label says: the label itself when it is one word, the
    value every part agrees on (``response:drop json:drop`` -> ``drop``), else the values in
    order of frequency while they fit (``isolated/carried``), else the commonest one and "…"."""
    if not model.is_measured((verdict, label)):
        return STATE_WORDS.get(verdict, verdict)
    text = re.sub(r" … \[.*$", "", label).strip()  # a label cut in the page data
    if not text:
        return verdict
    if "conflict:" in text:  # the conflict is what the label is about (data:ran conflict:drop)
        text = model.conflict_part(text)
    for phrase, word in PHRASES:
        if text.startswith(phrase + " ") or text == phrase:
            return word
    tokens = [t for t in re.split(r"[\s;()]+", text) if t]
    values = [re.sub(r"\[.*?\]", "", re.split(r"[:=]", t)[-1]) for t in tokens]
    values = [v for v in values if v] or [text]
    counts = Counter(values)
    if len(counts) > 1:
        counts.pop("n/a", None)
    ranked = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], values.index(kv[0])))]
    joined = "/".join(ranked)
    if len(joined) <= WORD_LIMIT:
        return joined
    first = ranked[0]
    return (first[: WORD_LIMIT - 1] + "…") if len(first) >= WORD_LIMIT else first + "…"


def outcome_words(outcomes: list[model.Outcome],
                  columns: list[set[model.Outcome]] | None = None) -> dict[model.Outcome, str]:
    """A word per outcome. Where two labels of one clause would read the same, the rarer ones
    get a subscript (``drop``, ``drop₂``), so a column never shows one word for two behaviours.
    ``outcomes`` come commonest first; ``columns`` are the outcomes seen per clause."""
    words = {o: short_word(*o) for o in outcomes}
    clash: set[str] = set()
    for seen in columns or [set(outcomes)]:
        by_word = Counter(words[o] for o in seen if model.is_measured(o))
        clash |= {w for w, n in by_word.items() if n > 1}
    numbered: Counter[str] = Counter()
    for o in outcomes:
        if words[o] in clash and model.is_measured(o):
            numbered[words[o]] += 1
            if numbered[words[o]] > 1:
                words[o] = words[o] + str(numbered[words[o]]).translate(SUBSCRIPTS)
    return words


def _sort_key(result: Result, release_index: dict[str, int]) -> tuple:
    cell = result["cell"]
    return (release_index.get(cell["fastapi"] or "", -1),
            model.version_key(cell["fastapi"] or ""),
            model.version_key(cell["starlette"] or ""), cell["python"])


def _sections(snapshot: model.Snapshot) -> list[tuple[str, str, list[Result]]]:
    """(key, title, cells): every FastAPI cell in release order (each release's cells by
    Starlette version), the pure Starlette cells, then the candidates."""
    release_index = {v: i for i, v in enumerate(snapshot.planned["fastapi"])}
    out = []
    if snapshot.cells("fastapi"):
        out.append(("fastapi", "FastAPI releases",
                    sorted(snapshot.cells("fastapi"), key=lambda r: _sort_key(r, release_index))))
    if snapshot.cells("starlette"):
        out.append(("starlette", "Starlette releases on their own", snapshot.cells("starlette")))
    if snapshot.cells("candidate"):
        out.append(("candidates", "Candidate resolutions", snapshot.cells("candidate")))
    return out


def matrix_data(snapshot: model.Snapshot) -> dict:
    """The page data: clauses, interned outcomes with words, sections and one row per cell."""
    ids = [c.id for c in snapshot.clauses]
    counts = Counter(model.outcome(r, cid) for r in snapshot.results.values() for cid in ids)
    ordered = [o for o, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    columns = [{model.outcome(r, cid) for r in snapshot.results.values()} for cid in ids]
    words = outcome_words(ordered, columns)
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
        # [verdict, label, word, verdict class]; the glyph follows from the class (GLYPHS)
        "outcomes": [
            [clean(v, LABEL_LIMIT), clean(lb, LABEL_LIMIT), clean(words[(v, lb)], 40),
             verdict_class(v)]
            for v, lb in ordered
        ],
        "glyphs": GLYPHS,
        "sections": [[key, title] for key, title, _ in sections],
        "releases": [clean(v, 40) for v in releases],
        "lines": sorted({clean(model.line_of(r["cell"]["starlette"]), 40) for r in snapshot.cells()
                         if r["cell"]["starlette"]}, key=model.version_key),
        "cells": cells,
    }


def legend_html(data: dict) -> Markup:
    """Verdict glyphs and colours, and every word used with the full labels it stands for
    (escaped: labels are data)."""
    swatches = [
        ("v-ok", f"{GLYPHS['v-ok']} conforms"),
        ("v-dev", f"{GLYPHS['v-dev']} deviates"),
        ("v-na", f"{GLYPHS['v-na']} n/a (the release lacks the feature)"),
        ("v-fail", f"{GLYPHS['v-fail']} no measurement: the cell's suite did not run "
                   "(the word says why)"),
        ("v-none", f"{GLYPHS['v-none']} not measured (the result predates the clause)"),
    ]
    seen: dict[str, set[str]] = {}
    for _verdict, label, word, _ in data["outcomes"]:
        if label and label != word:
            seen.setdefault(word, set()).add(label)
    words = [(word, "; ".join(sorted(labels)))
             for word, labels in sorted(seen.items(), key=lambda kv: kv[0].lower())]
    return part("legend")(swatches, words)
