"""The downloads: the whole matrix as JSON (described by matrix.schema.json) and as CSV.

The JSON Schema is a hand-written file published with the site (site/docs/downloads/), so the
file people download and the schema they read are the same one the tests validate against.
"""

from __future__ import annotations

import csv
import gzip
import io
import json

from bgmatrix.site import attribution, model
from bgmatrix.site.markup import clean
from bgmatrix.spec import ROOT

SCHEMA_PATH = ROOT / "site" / "docs" / "downloads" / "matrix.schema.json"
LABEL_LIMIT = 200
CSV_COLUMNS = (
    "cell", "kind", "fastapi", "starlette", "python", "candidate", "state",
    "clause", "keyword", "verdict", "label", "suite_hash",
)


def matrix_json(snapshot: model.Snapshot) -> dict:
    cells = []
    for result in snapshot.cells():
        cell, prov = result["cell"], result["provenance"]
        outcomes = {}
        if result["state"] == "ok":
            outcomes = {
                cid: {"verdict": e["verdict"], "label": clean(e["label"], LABEL_LIMIT)}
                for cid, e in sorted(result["clauses"].items())
            }
        cells.append(
            {
                "id": cell["id"],
                "kind": cell["kind"],
                "fastapi": cell["fastapi"] and clean(cell["fastapi"], 80),
                "starlette": cell["starlette"] and clean(cell["starlette"], 80),
                "python": cell["python"],
                "candidate": cell["candidate"] and clean(cell["candidate"], 200),
                "in_declared_range": cell["in_declared_range"],
                "state": result["state"],
                "spec_version": clean(prov["spec_version"], 40),
                "suite_hash": clean(prov["suite_hash"], 80),
                "result": f"results/{cell['id']}.json",
                "clauses": outcomes,
            }
        )
    return {
        "schema_version": 2,  # 2: run facts (finished) moved to the run record
        "snapshot": snapshot.id,
        "spec_version": snapshot.spec_version,
        "clauses": [
            {"id": c.id, "title": c.title, "chapter": c.chapter, "level": c.level,
             "keyword": c.keyword}
            for c in snapshot.clauses
        ],
        "cells": cells,
        **flips(),
    }


def flips() -> dict:
    """``{"flips": [...]}``: each flip's measured cause (matrix/attribution.json), or nothing
    when no attribution is recorded."""
    doc = attribution.load()
    if not doc:
        return {}
    return {"flips": [
        {"clause": e["clause"], "line": e["line"], "series": e["series"],
         "from_cell": e["from"]["cell"], "to_cell": e["to"]["cell"],
         "from": e["from"]["version"], "to": e["to"]["version"], "cause": e["cause"]["kind"],
         "cause_text": attribution.cause_text(e["cause"]), "note": e["cause"]["note"]}
        for e in doc["flips"]]}


def _cell(text: str) -> str:
    """A spreadsheet reads a leading = + - @ as a formula; labels are data, so prefix a quote."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def matrix_csv(export: dict) -> str:
    """One row per cell and clause (a cell whose suite did not run: one row, no clause)."""
    keywords = {c["id"]: c["keyword"] for c in export["clauses"]}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cell in export["cells"]:
        head = [cell["id"], cell["kind"], cell["fastapi"] or "", cell["starlette"] or "",
                cell["python"], cell["candidate"] or "", cell["state"]]
        rows = cell["clauses"].items() or [("", {"verdict": "", "label": ""})]
        for cid, entry in rows:
            writer.writerow(
                [_cell(x) for x in head]
                + [cid, keywords.get(cid, ""), entry["verdict"], _cell(entry["label"]),
                   _cell(cell["suite_hash"])]
            )
    return out.getvalue()


def gzipped(text: str) -> bytes:
    """``text`` gzip-compressed, the same bytes for the same text (no time or name inside)."""
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def dumps(export: dict) -> str:
    """Compact (it is downloaded gzip-compressed and read by programs; ``jq .`` indents it):
    indenting would run the standard library's pure-Python encoder over ~700,000 values."""
    return json.dumps(export, separators=(",", ":"), ensure_ascii=True) + "\n"
