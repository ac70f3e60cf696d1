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
    fidelity     matrix/fidelity.json             (bgmatrix.run.fidelity, bgmatrix.site)

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


@cache
def _clause_map_validators() -> tuple[jsonschema.Draft202012Validator,
                                      jsonschema.Draft202012Validator]:
    """The result schema's ``clauses`` rule in two parts: its names, and one clause line."""
    clauses = load("result")["properties"]["clauses"]
    return (jsonschema.Draft202012Validator({"propertyNames": clauses["propertyNames"]}),
            jsonschema.Draft202012Validator(clauses["additionalProperties"]))


#: Clause lines and sets of clause names that passed: they repeat from result to result.
_VALID_CLAUSE_LINES: set[tuple] = set()
_VALID_CLAUSE_NAMES: set[frozenset] = set()


def result_problem(data: Any) -> str | None:
    """``problem(data, "result")``, fast on a valid result.

    The clause map is four fifths of the cost of checking a result (some 80 lines, most of
    them the same lines in every result: ``["n/a", "n/a", "FastAPI-level clause; ..."]``), so
    it is checked against the schema's own ``clauses`` rule one distinct line (and one
    distinct set of names) at a time, and the rest of the result as usual. Any violation is
    then reported by the full check, with the message and path it always gave: only the valid
    case is short-cut.
    """
    clauses = data.get("clauses") if isinstance(data, dict) else None
    if isinstance(clauses, dict) and _validator("result", None).is_valid({**data, "clauses": {}}):
        names_rule, line_rule = _clause_map_validators()
        names = frozenset(clauses)
        if names in _VALID_CLAUSE_NAMES or names_rule.is_valid(clauses):
            _VALID_CLAUSE_NAMES.add(names)
            for value in clauses.values():
                key = (tuple(value) if isinstance(value, list)
                       and all(isinstance(x, str) for x in value) else None)
                if key in _VALID_CLAUSE_LINES:
                    continue
                if not line_rule.is_valid(value):
                    break
                if key is not None:
                    _VALID_CLAUSE_LINES.add(key)
            else:
                return None
    return problem(data, "result")
