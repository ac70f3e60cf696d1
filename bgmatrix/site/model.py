"""The results as the site reads them: releases in order, and each clause's behaviour over them.

Pure functions over loaded, validated result dicts: no files are written here. The site pages,
the exports and the ``cite`` command all ask this module, so a range, a profile or a snapshot id
means the same thing wherever it is shown.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from bgmatrix import agreement, evidence, paths, results, schemas, spec, vocabulary
from bgmatrix.errors import BgmatrixError, ProbeError
from bgmatrix.results import Result
from bgmatrix.snapshot import read_run, snapshot_id_of
from bgmatrix.spec import ROOT, Clause

PLAN_PATH = ROOT / "matrix" / "plan.json"

#: The conflict clause, the conflict cases and the profiles are the vocabulary's.
CONFLICT_CLAUSE = vocabulary.CONFLICT_CLAUSE
CONFLICT_CLAUSES = vocabulary.CONFLICT_CLAUSES
PROFILE_OF_LABEL = vocabulary.PROFILE_OF_LABEL
#: Verdicts that are measurements; anything else says why there is none.
MEASURED = vocabulary.VERDICTS
KINDS = ("fastapi", "starlette", "candidate")

#: (verdict or cell state, label). A cell whose suite did not run has ("install-error", "");
#: a result from an older spec that lacks the clause has ("missing", "").
Outcome = tuple[str, str]


class ReportError(BgmatrixError):
    """The inputs cannot make a site (invalid result files, an unreadable spec or plan)."""


@lru_cache(maxsize=None)
def version_key(version: str | None) -> tuple:
    """Sort key for release versions; something unparsable sorts last, by its text."""
    try:
        return (0, Version(version or ""), "")
    except InvalidVersion:
        return (1, Version("0"), version or "")


def line_of(version: str | None) -> str:
    """The release line (major.minor) a version belongs to: ``0.27.1`` -> ``0.27``."""
    if not version:
        return "?"
    parts = version.split(".")
    return ".".join(parts[:2])


def clean_version(version: str) -> str:
    """A version string fit for plain Markdown: the schema does not constrain its characters."""
    return re.sub(r"[^0-9A-Za-z.+-]", "?", version)[:40]


def outcome(result: Mapping[str, Any], clause_id: str) -> Outcome:
    if result["state"] != "ok":
        return (result["state"], "")
    entry = result["clauses"].get(clause_id)
    if entry is None:
        return ("missing", "")
    return (entry["verdict"], entry["label"])


def is_measured(out: Outcome) -> bool:
    return out[0] in MEASURED


def conflict_part(label: str) -> str:
    """The conflict label inside a composite label (``data:ran conflict:drop`` -> ``drop``)."""
    match = re.search(r"conflict:(\S+)", label)
    return match.group(1) if match else label


def profile(cell_results: Iterable[Mapping[str, Any]]) -> str:
    """The conformance profile of one release or candidate, from its conflict cases.

    ``drop``, ``warn`` or ``merge``; ``mixed`` when the cases span profiles; the label itself
    when a case has a label outside every profile (``duplicate``, ``lost-all``, ...);
    ``unmeasured`` when no conflict case has a verdict.
    """
    labels: set[str] = set()
    for result in cell_results:
        for cid in CONFLICT_CLAUSES:
            verdict, label = outcome(result, cid)
            if verdict in vocabulary.GRADED:
                labels.update(conflict_part(part) for part in label.split("; "))
    return vocabulary.profile_of(labels)


def behaviour_class(out: Outcome) -> str:
    """A fixed CSS class for an outcome, so a hostile label never becomes a class name."""
    verdict, label = out
    if verdict == "missing":
        return "none"
    if not is_measured(out):
        return "failed"
    if verdict == "n/a":
        return "na"
    return {
        "drop": "drop",
        "warn": "warn",
        "merge": "merge",
        "merge-reordered": "merge",
        "warn+merge": "warnmerge",
        "warn+merge-reordered": "warnmerge",
        "duplicate": "duplicate",
        "warn+duplicate": "duplicate",
        "lost-all": "lost",
    }.get(conflict_part(label), "other")


@dataclass(frozen=True)
class Run:
    """Consecutive measured releases whose cells show the same outcomes for one clause."""

    outcomes: tuple[Outcome, ...]
    releases: tuple[str, ...]
    cells: tuple[str, ...]
    #: how many releases the plan knows between the first and the last, both included
    span: int
    #: releases inside the run whose cells measured nothing (listed in ``releases`` too)
    gaps: tuple[str, ...] = ()

    @property
    def first(self) -> str:
        return self.releases[0]

    @property
    def last(self) -> str:
        return self.releases[-1]

    @property
    def measured(self) -> bool:
        return any(is_measured(o) for o in self.outcomes)

    @property
    def measured_count(self) -> int:
        """Releases in the run that were measured (``span`` counts every planned one)."""
        return len(self.releases) - len(self.gaps) if self.measured else 0


@dataclass
class Timeline:
    clause_id: str
    kind: str
    runs: list[Run]
    #: releases where the outcome returned to one seen before a different measured outcome
    flips: list[tuple[str, tuple[Outcome, ...]]] = field(default_factory=list)

    def run_of(self, release: str) -> Run | None:
        """The run a release belongs to (runs never share a release)."""
        return self._run_by_release.get(release)

    @cached_property
    def _run_by_release(self) -> dict[str, Run]:
        return {release: run for run in self.runs for release in run.releases}

    @property
    def first_change(self) -> tuple[Run, Run] | None:
        """(before, after) at the first release whose measured outcome differs."""
        measured = [r for r in self.runs if r.measured]
        for before, after in zip(measured, measured[1:]):
            if before.outcomes != after.outcomes:
                return before, after
        return None


@dataclass
class Snapshot:
    """Validated results, the spec's clauses and the plan: everything a page is made from."""

    clauses: tuple[Clause, ...]
    results: dict[str, Result]
    plan: dict
    spec_version: str
    run: dict | None = None  # the results folder's run record: the snapshot's date
    #: cell id -> SHA-256 of the stored file each result was read from (``load_results``),
    #: when known: the snapshot id is then looked up instead of hashed (``snapshot.content_hash``)
    stored: dict[str, str] | None = field(default=None, repr=False)
    #: matrix/server-probes.json (``bgmatrix probe``), which explains disagreements; or None
    probes: dict | None = field(default=None, repr=False)
    # Memos: every page asks for the same few timelines; results never change once loaded.
    _by_release: dict[str, dict[str, list[Result]]] = field(default_factory=dict, repr=False)
    _timelines: dict[tuple[str, str], Timeline] = field(default_factory=dict, repr=False)

    @cached_property
    def disagreements(self) -> dict[str, list[agreement.Disagreement]]:
        """Every disagreement between a cell's raw result and its wire runs, by clause, in
        release order, each with its explanation (bgmatrix/agreement.py) or None."""
        found: dict[str, list[agreement.Disagreement]] = {}
        for result in self.cells():
            for item in agreement.disagreements(result, self.probes):
                found.setdefault(item.clause, []).append(item)
        return found

    @cached_property
    def clause_by_id(self) -> dict[str, Clause]:
        return {c.id: c for c in self.clauses}

    @cached_property
    def id(self) -> str:
        return snapshot_id_of(self.results, self.run, self.stored)

    @cached_property
    def _ordered(self) -> list[Result]:
        return sorted(self.results.values(), key=cell_sort_key)

    def cells(self, kind: str | None = None) -> list[Result]:
        """Results of one kind (or all), in release order, then Starlette, then Python."""
        return [r for r in self._ordered if kind is None or r["cell"]["kind"] == kind]

    @cached_property
    def planned(self) -> dict[str, list[str]]:
        """Every release the plan knows, per kind, in version order (measured or not)."""
        out: dict[str, list[str]] = {}
        for kind in ("fastapi", "starlette"):
            versions = {r["version"] for r in self.plan.get(kind, [])}
            versions |= {r["cell"][kind] for r in self.cells(kind) if r["cell"][kind]}
            out[kind] = sorted(versions, key=version_key)
        return out

    def by_release(self, kind: str) -> dict[str, list[Result]]:
        """Measured releases of ``kind`` ("fastapi" or "starlette"), in order, with their cells."""
        if kind not in self._by_release:
            out: dict[str, list[Result]] = {}
            for result in self.cells(kind):
                cell = result["cell"]
                version = cell["starlette"] if kind == "starlette" else cell["fastapi"]
                out.setdefault(version or "?", []).append(result)
            self._by_release[kind] = out
        return self._by_release[kind]

    def release_outcomes(
        self, cells: Sequence[Mapping[str, Any]], clause_id: str
    ) -> tuple[Outcome, ...]:
        """The distinct outcomes of one release's cells; cells that measured win over cells
        whose suite did not run, since a failed install says nothing about the clause."""
        outs = {outcome(r, clause_id) for r in cells}
        measured = {o for o in outs if is_measured(o)}
        return tuple(sorted(measured or outs))

    def timeline(self, clause_id: str, kind: str = "fastapi") -> Timeline:
        """The clause's behaviour across the measured releases of ``kind``, folded into runs."""
        if (clause_id, kind) not in self._timelines:
            self._timelines[clause_id, kind] = self._timeline(clause_id, kind)
        return self._timelines[clause_id, kind]

    def _timeline(self, clause_id: str, kind: str) -> Timeline:
        """Releases whose cells measured nothing (an install error, a result older than the
        clause) do not end a run: they are gaps in the evidence, kept in the run's ``gaps``.
        Gaps between two different outcomes cannot be placed, so they form a run of their own.
        """
        index = {v: i for i, v in enumerate(self.planned.get(kind, []))}
        groups: list[list[tuple[str, tuple[Outcome, ...], tuple[str, ...]]]] = []
        pending: list[tuple[str, tuple[Outcome, ...], tuple[str, ...]]] = []
        for version, cells in self.by_release(kind).items():
            item = (version, self.release_outcomes(cells, clause_id),
                    tuple(r["cell"]["id"] for r in cells))
            if not any(is_measured(o) for o in item[1]):
                pending.append(item)
            elif groups and groups[-1][0][1] == item[1] and any(
                    is_measured(o) for o in groups[-1][0][1]):
                groups[-1] += pending + [item]
                pending = []
            else:
                groups += _fold_unmeasured(pending) + [[item]]
                pending = []
        groups += _fold_unmeasured(pending)

        def run(group: list) -> Run:
            first, last = group[0][0], group[-1][0]
            span = index.get(last, 0) - index.get(first, 0) + 1
            return Run(
                outcomes=group[0][1],
                releases=tuple(v for v, _, _ in group),
                cells=tuple(c for _, _, ids in group for c in ids),
                span=max(span, len(group)),
                gaps=tuple(v for v, outs, _ in group if not any(is_measured(o) for o in outs)),
            )

        runs = [run(g) for g in groups]
        return Timeline(clause_id, kind, runs, _flips(runs))


def _fold_unmeasured(items: list) -> list[list]:
    """Unplaced releases without a measurement, grouped while their states agree."""
    groups: list[list] = []
    for item in items:
        if groups and groups[-1][-1][1] == item[1]:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _flips(runs: list[Run]) -> list[tuple[str, tuple[Outcome, ...]]]:
    """Releases where a clause went back to an outcome it had before (A -> B -> A).

    Releases whose suite did not run are skipped: an install error between two ``drop`` runs
    is a gap in the evidence, not a change of behaviour.
    """
    seen: list[tuple[Outcome, ...]] = []
    flips = []
    for run in runs:
        if not run.measured:
            continue
        if seen and run.outcomes != seen[-1] and run.outcomes in seen:
            flips.append((run.first, run.outcomes))
        if not seen or seen[-1] != run.outcomes:
            seen.append(run.outcomes)
    return flips


def cell_sort_key(result: Mapping[str, Any]) -> tuple:
    cell = result["cell"]
    return (
        KINDS.index(cell["kind"]),
        cell["candidate"] or "",
        version_key(cell["fastapi"]),
        version_key(cell["starlette"]),
        version_key(cell["python"]),
        cell["id"],
    )


def load_plan(path: Path = PLAN_PATH) -> dict:
    """The committed plan (release dates and lines); a site can be built without one."""
    from bgmatrix.plan import store  # the one plan reader: checked, one line per problem

    if not Path(path).is_file():
        return {"fastapi": [], "starlette": [], "cells": []}
    try:
        return store.load_plan(path)
    except store.PlanFileError as exc:
        raise ReportError(str(exc)) from None


def _validated_cache() -> Path:
    return paths.WORK_DIR / "report" / "validated.json"


def load_results(
    folder: Path, use_cache: bool = True, stored: dict[str, str] | None = None
) -> tuple[dict[str, results.Result], list[str]]:
    """``results.load_all``, remembering which exact file contents passed validation.

    Schema validation is most of the cost of reading a full matrix, and a result file rarely
    changes once committed. A file whose bytes (by SHA-256) passed against the same schema
    before is parsed without validating again; any other file goes through ``results.load``,
    so every error reads exactly as it would there. Each file is read once: its digest and
    its result come from the same bytes, even while a sweep rewrites the folder. ``stored``,
    when given, receives each loaded result's digest by cell id (for ``Snapshot.stored``).
    """
    cache = _validated_cache()
    schema_key = schemas.fingerprint("result")
    # Evidence objects too, by (hash, kind) against the evidence schema's own fingerprint.
    evidence_key = "evidence:" + schemas.fingerprint("evidence")
    known: set[str] = set()
    trusted: set[tuple[str, str]] = set()
    if use_cache:
        try:
            record = json.loads(cache.read_text(encoding="utf-8"))
            known = set(record.get(schema_key, []))
            trusted = {tuple(p.split(":", 1)) for p in record.get(evidence_key, [])}
        except (OSError, ValueError, AttributeError, TypeError):
            known, trusted = set(), set()
    found: dict[str, results.Result] = {}
    errors: list[str] = []
    passed: set[str] = set()
    store = evidence.Store(folder)
    store.trust(trusted)
    for path in results.result_paths(folder):
        try:
            data: bytes | None = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()  # type: ignore[arg-type]
        except OSError:
            data, digest = None, ""
        if digest and digest in known:
            stored_form = json.loads(data)  # type: ignore[arg-type]
            if stored_form["cell"]["id"] == path.stem:
                try:
                    found[path.stem] = results.expand(stored_form, store, str(path))
                    if stored is not None:
                        stored[path.stem] = digest
                except results.ResultError as exc:
                    errors.append(str(exc))
                passed.add(digest)
                continue
        try:
            found[path.stem] = results.load(path, store, content=data)
            passed.add(digest)
            if stored is not None and digest:
                stored[path.stem] = digest
        except results.ResultError as exc:
            errors.append(str(exc))
    if use_cache and (passed - known or store.checked - trusted):
        try:
            results.write_text_atomic(cache, json.dumps({
                schema_key: sorted(known | passed),
                evidence_key: sorted(f"{k}:{kind}" for k, kind in store.checked | trusted)}))
        except OSError:
            pass  # a cache that cannot be written only costs time
    return found, errors


def load_snapshot(
    results_dir: Path,
    plan_path: Path = PLAN_PATH,
    spec_dir: Path = spec.SPEC_DIR,
    use_cache: bool = True,
) -> Snapshot:
    """Read and validate everything; every invalid result file is one line of the error."""
    if not results_dir.is_dir():
        # A mistyped --results must not publish an empty site over the real one.
        what = "not a folder" if results_dir.exists() else "no such folder"
        raise ReportError(f"{results_dir}: {what}")
    stored: dict[str, str] = {}
    found, errors = load_results(results_dir, use_cache, stored)
    plan = load_plan(plan_path)
    errors += plan_contradictions(found, plan, results_dir)
    if errors:
        shown = errors[:10]
        if len(errors) > len(shown):
            shown.append(f"... and {len(errors) - len(shown)} more invalid result files")
        raise ReportError("\n".join(shown))
    try:
        clauses = spec.load(spec_dir)
        version = spec.spec_version(spec_dir)
    except spec.SpecError as exc:
        raise ReportError(str(exc)) from None
    try:
        run = read_run(results_dir)
    except results.ResultError as exc:
        raise ReportError(str(exc)) from None
    try:
        probes = agreement.load_probes()
    except ProbeError as exc:
        raise ReportError(str(exc)) from None
    return Snapshot(clauses, found, plan, version, run, stored=stored, probes=probes)


_PLANNED_KEYS = ("kind", "fastapi", "starlette", "python", "cutoff")


def plan_contradictions(
    found: dict[str, results.Result], plan: dict, folder: Path
) -> list[str]:
    """Results the plan does not know, or knows with other versions or cutoff: stale data
    (an older plan, a hand-edited file) that must not be published as today's evidence.
    Candidates are built outside the plan and are not checked against it."""
    planned = {c["id"]: c for c in plan.get("cells", [])}
    errors = []
    for cid, result in sorted(found.items()):
        cell = result["cell"]
        if cell["kind"] == "candidate":
            continue
        want = planned.get(cid)
        if want is None:
            errors.append(f"{folder / cid}.json: cell is not in matrix/plan.json "
                          "(a stale result? re-run `nox -s plan` and the sweep)")
            continue
        differs = [k for k in _PLANNED_KEYS if cell.get(k) != want.get(k)]
        if differs:
            errors.append(f"{folder / cid}.json: {', '.join(differs)} differ from the plan's "
                          "cell (the plan is newer than this result; re-run the cell)")
    return errors
