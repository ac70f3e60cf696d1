"""Result files: one small JSON document per cell, its bulky evidence stored once beside it.

A result file is data people diff, so it holds only what a reader compares between releases
(the cell, its state, provenance, one line per clause) and names the rest by hash: the test
records and their event logs live in the evidence store (`bgmatrix.evidence`), shared by
every cell that observed the same thing. Nothing that differs between two identical runs
(times, host, paths) is in it: a re-run that sees the same behaviour writes the same bytes,
and then writes nothing at all. Run facts go into the folder's run record (`bgmatrix.snapshot`).

Two forms of one result:

- the **stored** form (schema/result.schema.json, ``schema_version`` 3), what the file holds;
- the **full** form, what the runner produces and what `load` returns: ``tests`` is the list of
  test records with their observations inline, each clause lists its tests, ``wire`` evidence
  is inline. `compact` and `expand` turn one into the other without loss.

In the stored form each clause is one short line, a list in a fixed order::

    "ATTACH-1": ["conforms", "ran"],                       verdict, label
    "EXEC-7": ["n/a", "n/a", "the injected task did not run"],   ... and the n/a reason
    (under wire)  "ATTACH-3": ["deviates", "drop", "404d5626646a1b8d"]
                                                           verdict, label, evidence hash
                                                           (and a reason, fourth, if any)

The full form spells them out as ``{"verdict", "label", "reason"?, "tests"}`` and, under
``wire``, ``{"verdict", "label", "reason"?, "evidence": <the object>}``.

The full form keeps ``schema_version`` 2 (`SCHEMA_VERSION`): version 3 changed how a result
is stored, not what it says, so a result reads and hashes (`bgmatrix.snapshot`) as before.

Every write is validated and atomic (a temp file in the same folder, then ``os.replace``).
A write never drops an evidence source it did not re-measure (`SOURCES`): it carries it over
from the file it replaces, marked stale when its method changed, unless the caller asks to
discard it by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NotRequired, Optional, TypedDict, cast

from bgmatrix import evidence, schemas
from bgmatrix.errors import BgmatrixError

# write_text_atomic: also the store's writer for other callers
from bgmatrix.files import write_text_atomic, write_text_if_changed  # noqa: F401
from bgmatrix.spec import ROOT, Clause, clause_order

SCHEMA_VERSION = 2  # of the full form: what a result says (the snapshot hash covers it)
STORED_VERSION = 3  # of the stored form: how a file holds it (3: one list per clause)
SCHEMA_PATH = ROOT / "schema" / "result.schema.json"
RESULTS_DIR = ROOT / "results"

#: Evidence sources measured apart from the in-cell suite; each records the hash of the method
#: that measured it (``<source>_hash``), so a carried-over source can be found stale.
SOURCES = ("wire", "servers")

#: Observations the suite records identically in every test of a cell (what the app imported):
#: stored once per cell under ``observed`` instead of once per test.
CELL_OBSERVATIONS = ("framework",)
_FROM_CELL = "cell"  # a test record's observation that lives in the cell's ``observed``


class CellOfResult(TypedDict):
    """The cell a result was measured in (schema/result.schema.json ``cell``)."""

    id: str
    kind: Literal["fastapi", "starlette", "candidate"]
    fastapi: Optional[str]
    starlette: Optional[str]
    python: str
    cutoff: Optional[str]
    in_declared_range: Optional[bool]
    candidate: Optional[str]
    # Candidate cells only: the sha256 of the base sdist and of the patch, or of the wheel.
    build: NotRequired[dict[str, str]]


class _Reason(TypedDict, total=False):
    reason: str  # why n/a (or why a clause has no verdict)
    tests: list[str]  # the tests that graded it: in the full form only


class ClauseOutcome(_Reason):
    """One clause's outcome in a cell (full form; stored as the list ``[verdict, label,
    reason?]``, the line a reader diffs)."""

    verdict: str  # conforms | deviates | n/a | timeout | harness-error
    label: str


class TestRecord(TypedDict):
    """One test's record in the full form (schema/evidence.schema.json ``test_record_full``)."""

    test: str
    clauses: list[str]
    outcome: Literal["ok", "timeout", "harness-error"]
    error: Optional[str]
    observations: dict[str, Any]
    verdicts: dict[str, dict[str, str]]


class _Sources(TypedDict, total=False):
    wire: dict[str, Any]  # evidence measured apart from the raw suite (SOURCES): uvicorn
    servers: dict[str, Any]  # the same, through every other server: {servers_hash, runs}
    observed: dict[str, Any]  # the stored form's cell-level observations


class Result(_Sources):
    """A result in the full form: what the runner produces, `load` returns, the site reads."""

    schema_version: int
    cell: CellOfResult
    state: str  # ok | install-error | no-interpreter | import-error | harness-error | timeout
    message: Optional[str]
    provenance: dict[str, Any]
    clauses: dict[str, ClauseOutcome]
    tests: list[TestRecord]


class StoredResult(_Sources):
    """A result as its file holds it: ``tests`` names the test set by hash."""

    schema_version: int
    cell: CellOfResult
    state: str
    message: Optional[str]
    provenance: dict[str, Any]
    clauses: dict[str, list[str]]  # [verdict, label, reason?]
    tests: Optional[str]


class ResultError(BgmatrixError):
    """A result file is missing, corrupt, of another schema, or contradicts itself."""


def schema() -> dict:
    return schemas.load("result")


def _check(data: object, where: str) -> dict:
    if isinstance(data, dict) and data.get("schema_version") != STORED_VERSION:
        raise ResultError(
            f"{where}: schema_version {data.get('schema_version')!r} is not {STORED_VERSION}"
            " (scripts/convert_results_v1.py, then scripts/convert_results_v2.py upgrade"
            " older folders)"
        )
    found = schemas.result_problem(data)
    if found is not None:
        raise ResultError(f"{where}: {found}")
    return data  # type: ignore[return-value]


def is_stored(data: Mapping) -> bool:
    return not isinstance(data.get("tests"), list)


def _check_full_version(full: Mapping, where: str) -> None:
    if full.get("schema_version") != SCHEMA_VERSION:
        raise ResultError(f"{where}: schema_version {full.get('schema_version')!r} is not "
                          f"{SCHEMA_VERSION} (the full form's version)")


def validate(data: Any, where: str) -> dict:
    """Check a result in either form; raise one line naming ``where`` and the problem."""
    if isinstance(data, dict) and not is_stored(data):
        _check_full_version(data, where)
        _check(compact(cast(Result, data))[0], where)
        _check_records(cast(Result, data), where)
        return data
    return _check(data, where)


def _check_records(full: Result, where: str) -> None:
    """The full form's test records, which the stored form names only by hash."""
    try:
        for record in full["tests"]:
            evidence.validate(record, "test_record_full", where)
    except evidence.EvidenceError as exc:
        raise ResultError(str(exc)) from None


# --- the two forms -------------------------------------------------------------------------


def compact(full: Result) -> tuple[StoredResult, dict[str, Any]]:
    """The stored form of ``full``, and the evidence objects it names, by hash."""
    objects: dict[str, Any] = {}

    def put(obj: Any) -> str:
        key = evidence.digest(obj)
        objects[key] = obj
        return key

    out = {k: v for k, v in full.items() if k not in ("tests", "clauses", *SOURCES)}
    out["schema_version"] = STORED_VERSION
    out["clauses"] = {cid: _stored_clause(entry) for cid, entry in full["clauses"].items()}
    records = full["tests"]
    observed: dict[str, Any] = {}
    for key in CELL_OBSERVATIONS:
        values = [r["observations"][key] for r in records if key in (r["observations"] or {})]
        if values and all(v == values[0] for v in values):
            observed[key] = values[0]
    if observed:
        out["observed"] = observed
    tests = {}
    for record in records:
        stored = {k: v for k, v in record.items() if k != "test"}
        stored["observations"] = {
            key: _FROM_CELL if key in observed else put(value)
            for key, value in (record["observations"] or {}).items()
        }
        tests[record["test"]] = put(stored)
    out["tests"] = put(tests) if tests else None
    sections: Mapping[str, Any] = full  # the sources, looked up by name
    for source in SOURCES:
        if source in sections:
            out[source] = _map_runs(source, sections[source], lambda run: {
                **run, "clauses": {cid: _stored_clause(entry, put(entry["evidence"]))
                                   for cid, entry in run["clauses"].items()}})
    return cast(StoredResult, out), objects


def _map_runs(source: str, section: Mapping[str, Any], convert) -> dict[str, Any]:
    """``section`` with ``convert`` applied to each server run in it: ``wire`` is one run,
    ``servers`` holds one per server under ``runs``."""
    if source == "wire":
        return convert(dict(section))
    return {**section, "runs": {name: convert(dict(run))
                                for name, run in section["runs"].items()}}


def server_runs(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every wire run of a result by server name: uvicorn's (``wire``), then the others'."""
    runs: dict[str, Mapping[str, Any]] = {}
    if result.get("wire"):
        runs["uvicorn"] = result["wire"]
    runs.update((result.get("servers") or {}).get("runs", {}))
    return runs


def server_version(run: Mapping[str, Any]) -> Optional[str]:
    """The version of the server of one wire run (uvicorn's run names it ``uvicorn``)."""
    return run.get("uvicorn") or run.get("version")


def stale_reason(result: Mapping[str, Any], server: str) -> Optional[str]:
    """Why the source holding ``server``'s run is stale (``carry_over``), or None."""
    section = result.get("wire") if server == "uvicorn" else result.get("servers")
    return (section or {}).get("stale")


def _stored_clause(entry: Mapping[str, Any], evidence_key: str | None = None) -> list[str]:
    """``[verdict, label]``, then the evidence hash (wire), then the reason if there is one."""
    out = [entry["verdict"], entry["label"]]
    if evidence_key is not None:
        out.append(evidence_key)
    if "reason" in entry:
        out.append(entry["reason"])
    return out


def _full_clause(stored: list[str], with_evidence: bool = False) -> dict[str, Any]:
    """The mapping a stored clause line stands for (the inverse of `_stored_clause`)."""
    entry: dict[str, Any] = {"verdict": stored[0], "label": stored[1]}
    rest = stored[2:]
    if with_evidence:
        entry["evidence"], rest = rest[0], rest[1:]
    if rest:
        entry["reason"] = rest[0]
    return entry


def clause_entries(stored: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A stored result's clauses as mappings, from a schema-2 file (already mappings) or a
    schema-3 one (lists): enough to compare a snapshot published before the conversion."""
    return {cid: dict(entry) if isinstance(entry, Mapping) else _full_clause(entry)
            for cid, entry in stored["clauses"].items()}


def expand(stored: StoredResult, store: evidence.Store, where: str = "") -> Result:
    """The full form of a stored result, every evidence object checked against its hash."""
    try:
        return _expand(stored, store, where)
    except evidence.EvidenceError as exc:
        raise ResultError(f"{where}: {exc}") from None


def _expand(stored: StoredResult, store: evidence.Store, where: str) -> Result:
    full = {k: v for k, v in stored.items() if k not in ("tests", "observed", "clauses")}
    full["schema_version"] = SCHEMA_VERSION
    observed = stored.get("observed", {})
    records = []
    if stored["tests"] is not None:
        tests = store.get_checked(stored["tests"], "test_set", where)
        for name in sorted(tests):
            record = store.get_checked(tests[name], "test_record", where)
            obs = {
                key: observed[key] if ref == _FROM_CELL else store.get(ref)
                for key, ref in record["observations"].items()
            }
            records.append({**record, "test": name, "observations": obs})
    full["tests"] = records
    by_clause: dict[str, list[str]] = {}
    for record in records:
        for cid in record["clauses"]:
            by_clause.setdefault(cid, []).append(record["test"])
    full["clauses"] = {
        cid: {**_full_clause(entry), "tests": sorted(set(by_clause.get(cid, [])))}
        for cid, entry in stored["clauses"].items()
    }
    def expand_run(run: dict[str, Any]) -> dict[str, Any]:
        clauses = {}
        for cid, line in run["clauses"].items():
            entry = _full_clause(line, with_evidence=True)
            clauses[cid] = {**entry, "evidence": store.get(entry["evidence"])}
        return {**run, "clauses": clauses}

    stored_sections: Mapping[str, Any] = stored  # the sources, looked up by name
    for source in SOURCES:
        if source in stored_sections:
            full[source] = _map_runs(source, stored_sections[source], expand_run)
    return cast(Result, full)


# --- text ----------------------------------------------------------------------------------


def dumps(stored: Mapping) -> str:
    """One clause a line, every other mapping one key a line: diffs say what changed.

    ASCII escapes keep any text an application raised intact, lone surrogates included
    (invalid UTF-8 decoded with surrogateescape), where a UTF-8 file could not hold it.
    """
    return _format(stored, 0, None) + "\n"


def _format(value: Any, depth: int, key: str | None) -> str:
    if not isinstance(value, dict) or not value or key == "_entry":
        return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(", ", ": "))
    pad = " " * (depth + 1)
    child = "_entry" if key == "clauses" else None
    items = [
        f"{pad}{json.dumps(k, ensure_ascii=True)}: {_format(value[k], depth + 1, child or k)}"
        for k in sorted(value, key=clause_order)  # ATTACH-2 before ATTACH-10
    ]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"


# --- files ---------------------------------------------------------------------------------


def write(
    path: Path,
    result: Result | StoredResult,
    current_methods: Mapping[str, str] | None = None,
    discard_unmeasured: bool = False,
) -> bool:
    """Validate ``result`` (either form) and store it at ``path``; True if the file changed.

    Evidence sources that the file at ``path`` holds and ``result`` lacks are carried over
    (never lost by a run that did not re-measure them), marked ``stale`` when their method
    hash differs from ``current_methods[source]``; ``discard_unmeasured`` drops them instead.
    """
    path = Path(path)
    store = evidence.Store(path.parent)
    where = str(path)
    objects: dict[str, Any] = {}
    if is_stored(result):
        stored = cast(StoredResult, dict(result))
    else:
        _check_full_version(result, where)
        stored, objects = compact(cast(Result, result))
        _check_records(cast(Result, result), where)
    if not discard_unmeasured:
        stored = carry_over(stored, _previous(path), current_methods or {})
    _check(stored, where)
    text = dumps(stored)
    with store.lock(exclusive=True):  # packs are rewritten whole: one writer at a time
        store.add(objects)  # evidence first: a result never names a missing object
        return write_text_if_changed(path, text)


def _previous(path: Path) -> Mapping[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _check(data, str(path))
    except (OSError, UnicodeDecodeError, ValueError, ResultError):
        return None  # nothing readable to keep


def carry_over(stored: StoredResult, previous: Mapping[str, Any] | None,
               current_methods: Mapping[str, str]) -> StoredResult:
    """``stored`` plus every evidence source of ``previous`` it did not re-measure."""
    if previous is None or previous.get("cell", {}).get("id") != stored["cell"]["id"]:
        return stored
    out = dict(stored)
    for source in SOURCES:
        if source in out or source not in previous:
            continue
        kept = dict(previous[source])
        measured_with = kept.get(f"{source}_hash")
        now = current_methods.get(source)
        if now is not None and measured_with != now:
            kept["stale"] = (f"measured with {source} method {measured_with}; the method is now "
                             f"{now}: re-run with {source} mode to refresh")
        elif now is not None:
            kept.pop("stale", None)
        out[source] = kept
    return cast(StoredResult, out)


def load_stored(path: Path, content: bytes | None = None) -> StoredResult:
    """Read and validate one result file as stored; its cell id must match its file name.
    ``content``: the file's bytes, when the caller has read them already."""
    try:
        text = path.read_text(encoding="utf-8") if content is None else content.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON (truncated?): {exc}") from None
    _check(data, str(path))
    if data["cell"]["id"] != path.stem:
        raise ResultError(
            f"{path}: its cell id {data['cell']['id']!r} contradicts its file name"
        )
    return cast(StoredResult, data)


def load(path: Path, store: evidence.Store | None = None,
         content: bytes | None = None) -> Result:
    """Read, validate and expand one result file (the full form); ``content``: its bytes,
    when the caller has read them already."""
    path = Path(path)
    stored = load_stored(path, content)
    return expand(stored, store or evidence.Store(path.parent), str(path))


def result_paths(folder: Path) -> list[Path]:
    """The result files of a folder (not the run record, not temporary files)."""
    return [p for p in sorted(Path(folder).glob("*.json"))
            if not p.name.startswith(".") and p.name != "run.json"]


def load_all(folder: Path = RESULTS_DIR) -> tuple[dict[str, Result], list[str]]:
    """Every result in ``folder`` by cell id, and a one-line error for each invalid file."""
    found: dict[str, Result] = {}
    errors: list[str] = []
    store = evidence.Store(Path(folder))
    for path in result_paths(folder):
        try:
            found[path.stem] = load(path, store)
        except ResultError as exc:
            errors.append(str(exc))
    return found, errors


def referenced(stored: Mapping, store: evidence.Store) -> set[str]:
    """Every evidence hash a stored result names, directly or through its test set."""
    keys: set[str] = set()
    if stored.get("tests"):
        keys.add(stored["tests"])
        for record_key in store.get(stored["tests"]).values():
            keys.add(record_key)
            keys.update(v for v in store.get(record_key)["observations"].values()
                        if v != _FROM_CELL)
    for run in server_runs(stored).values():
        for entry in run.get("clauses", {}).values():
            keys.add(entry[2])  # [verdict, label, evidence, reason?]
    return keys


def collect_garbage(folder: Path) -> int:
    """Remove evidence objects that no result in ``folder`` names; returns how many.

    Removes nothing when any result file (or an object it names) cannot be read: what it
    references is unknown, and the load that meets it reports the problem.
    """
    store = evidence.Store(Path(folder))
    if not store.folder.is_dir():
        return 0
    with store.lock(exclusive=True):  # no write is half done while we look
        keys: set[str] = set()
        try:
            for path in result_paths(folder):
                keys |= referenced(load_stored(path), store)
        except (ResultError, evidence.EvidenceError):
            return 0  # a result we cannot read may name anything: keep everything
        return store.remove_unreferenced(keys)


def aggregate(
    records: Iterable[dict], clauses: Iterable[Clause], kind: str
) -> dict[str, ClauseOutcome]:
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
    return cast(dict[str, ClauseOutcome], out)
