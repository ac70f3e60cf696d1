"""Result files: one JSON document per cell, schema-checked on every write and every load.

A result file is data people diff, so it is written deterministically (sorted keys, tests in
node-id order) and atomically (a temp file in the same folder, then ``os.replace``): a sweep
killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import jsonschema

from bgmatrix.spec import ROOT, Clause

SCHEMA_VERSION = 1
SCHEMA_PATH = ROOT / "schema" / "result.schema.json"
RESULTS_DIR = ROOT / "results"

#: Cell states that mean the suite did not run to completion; each keeps its message.
FAILED_STATES = ("install-error", "no-interpreter", "import-error", "harness-error", "timeout")



class ResultError(BgmatrixError):
    """A result file is missing, corrupt, of another schema, or contradicts itself."""


@cache
def schema() -> dict:
from bgmatrix import evidence
from bgmatrix.errors import BgmatrixError
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(data: object, where: str) -> dict:
    """Check ``data`` against the JSON Schema; raise one line naming ``where`` and the problem."""
    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ResultError(
            f"{where}: schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema()).iter_errors(data)
    )
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ResultError(f"{where}: {at}: {error.message[:300]}")
    return data  # type: ignore[return-value]


def dumps(data: dict) -> str:
    # ASCII escapes keep any text an application raised intact, lone surrogates included
    # (invalid UTF-8 decoded with surrogateescape), where a UTF-8 file could not hold it.
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def write(path: Path, data: dict) -> None:
    """Validate, then replace ``path`` atomically."""
    validate(data, str(path))
    write_text_atomic(path, dumps(data))


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes private files; results and plans are shared data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict:
    """Read and validate one result file; its cell id must match its file name."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON (truncated?): {exc}") from None
    validate(data, str(path))
    if data["cell"]["id"] != path.stem:
        raise ResultError(
            f"{path}: its cell id {data['cell']['id']!r} contradicts its file name"
        )
    return data


def load_all(folder: Path = RESULTS_DIR) -> tuple[dict[str, dict], list[str]]:
    """Every result in ``folder`` by cell id, and a one-line error for each invalid file."""
    found: dict[str, dict] = {}
    errors: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            found[path.stem] = load(path)
        except ResultError as exc:
            errors.append(str(exc))
    return found, errors


def aggregate(
    records: Iterable[dict], clauses: Iterable[Clause], kind: str
) -> dict[str, dict]:
    """One verdict per clause from the tests that graded it.

    The worst outcome wins: a harness error or timeout in any test of a clause makes the
    clause's verdict that; otherwise any deviation; n/a only when every test said n/a.
    """
    by_clause: dict[str, list[tuple[str, dict | None, str]]] = {}
    for rec in records:
        for cid in rec["clauses"]:
            verdict = rec["verdicts"].get(cid)
            by_clause.setdefault(cid, []).append((rec["test"], verdict, rec["outcome"]))
    out: dict[str, dict] = {}
    for clause in clauses:
        graded = by_clause.get(clause.id)
        if not graded:
            if kind == "starlette" and clause.level == "FastAPI":
                out[clause.id] = {"verdict": "n/a", "label": "n/a", "tests": [],
                                  "reason": "FastAPI-level clause; this cell runs pure Starlette"}
            else:  # a test that should have run did not: never a quiet n/a
                out[clause.id] = {"verdict": "harness-error", "label": "-", "tests": [],
                                  "reason": "no test of this clause ran in this cell"}
            continue
        tests = sorted({t for t, _, _ in graded})
        outcomes = {o for _, _, o in graded}
        verdicts = [v for _, v, o in graded if v is not None and o == "ok"]
        labels = sorted({v["label"] for v in verdicts})
        entry: dict = {"tests": tests, "label": "; ".join(labels) or "-"}
        if "harness-error" in outcomes:
            entry["verdict"] = "harness-error"
        elif "timeout" in outcomes:
            entry["verdict"] = "timeout"
        elif any(v["verdict"] == "deviates" for v in verdicts):
            entry["verdict"] = "deviates"
        elif all(v["verdict"] == "n/a" for v in verdicts):
            entry["verdict"] = "n/a"
            entry["reason"] = "; ".join(sorted({v.get("reason", "") for v in verdicts}))
        else:
            entry["verdict"] = "conforms"
        out[clause.id] = entry
    return out
