"""The JSON Schemas of every committed file kind, in one place: ``schema/<name>.schema.json``.

    plan         matrix/plan.json                 (read by bgmatrix.plan.store, stdlib-only)
    result       results/<cell>.json              (bgmatrix.results)
    evidence     results/evidence/<0-f>.jsonl     (bgmatrix.evidence; one ``$defs`` kind each)
    run          results/run.json                 (bgmatrix.snapshot)
    regression   candidates/regression.json       (bgmatrix.run.candidates, bgmatrix.site)
    cost         candidates/cost.json             (scripts/cost.py)
    upstream     candidates/upstream/check.json   (bgmatrix.run.upstream)
    compat       candidates/compat.json           (bgmatrix.run.compat)
    attribution  matrix/attribution.json          (bgmatrix.run.attribute, bgmatrix.site)

One validator per schema (or ``$defs`` entry) is built once per process: building one costs
far more than using it, and a full matrix is checked tens of thousands of times.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

import jsonschema

from bgmatrix.spec import ROOT

SCHEMA_DIR = ROOT / "schema"


@cache
def load(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def fingerprint(name: str) -> str:
    """16 hex digits of the SHA-256 of schema ``name``'s file: what a record of data that
    passed it is keyed by (such a record holds only while the schema is the same)."""
    return hashlib.sha256((SCHEMA_DIR / f"{name}.schema.json").read_bytes()).hexdigest()[:16]


@cache
def _validator(name: str, kind: str | None) -> jsonschema.Draft202012Validator:
    schema = load(name)
    if kind is not None:
        schema = {"$ref": f"#/$defs/{kind}", "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def problem(data: Any, name: str, kind: str | None = None) -> str | None:
    """The most relevant violation of schema ``name`` (or its ``$defs`` ``kind``), as one line
    ``<path>: <message>``, or None when ``data`` is valid."""
    error = jsonschema.exceptions.best_match(_validator(name, kind).iter_errors(data))
    if error is None:
        return None
    at = "/".join(str(p) for p in error.absolute_path) or "(top)"
    return f"{at}: {' '.join(error.message.split())[:300]}"
