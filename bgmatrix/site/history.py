"""Published snapshots: the committed list of them (matrix/snapshots.json), the History page,
and each clause's history across them.

``bgmatrix report --publish`` appends the snapshot it publishes (its id, the commit of its
results, its date, spec version and, per clause, how many release cells conform, deviate, are
n/a or were not measured) unless the list has it already. The list is written
deterministically (one line per clause, in spec order) so a diff of it reads as what changed.
Changes compares a snapshot with the previous *published* one from this list, never with
whatever commit is at HEAD.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from bgmatrix.results import write_text_atomic
from bgmatrix.site import cite, model
from bgmatrix.site.render import NOT_SEARCHED, code, link, part, raw, table, text
from bgmatrix.spec import ROOT

SNAPSHOTS_PATH = ROOT / "matrix" / "snapshots.json"
SCHEMA_VERSION = 1
#: The per-clause counts, in this order: verdicts of release cells, then "not measured".
COLUMNS = ("conforms", "deviates", "n/a", "not measured")
#: Changed clauses named in one History row; the rest are counted.
CHANGED_LIMIT = 8

Counts = tuple[int, int, int, int]


@dataclass(frozen=True)
class Entry:
    id: str
    commit: str
    date: str
    spec: str
    cells: int
    clauses: dict[str, Counts] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"id": self.id, "commit": self.commit, "date": self.date, "spec": self.spec,
                "cells": self.cells, "clauses": {k: list(v) for k, v in self.clauses.items()}}


# ---------------------------------------------------------------------------------------------
# The list


def summarise(snapshot: model.Snapshot, commit: str) -> Entry:
    """The snapshot as one list entry: per clause, counts over the release cells it is about
    (FastAPI cells for a FastAPI-level clause, FastAPI and Starlette cells for a Starlette-level
    one; candidates are experiments, not releases). Every clause page asks: counted once per
    snapshot (its id is a hash of its content)."""
    key = (snapshot.id, commit)
    if key not in _SUMMARIES:
        _SUMMARIES[key] = _summarise(snapshot, commit)
    return _SUMMARIES[key]


_SUMMARIES: dict[tuple[str, str], Entry] = {}


def _summarise(snapshot: model.Snapshot, commit: str) -> Entry:
    cells = [r for r in snapshot.cells() if r["cell"]["kind"] != "candidate"]
    clauses: dict[str, Counts] = {}
    for clause in snapshot.clauses:
        counts = [0, 0, 0, 0]
        for result in cells:
            if clause.level != "Starlette" and result["cell"]["kind"] == "starlette":
                continue
            verdict = model.outcome(result, clause.id)[0]
            counts[COLUMNS.index(verdict) if verdict in COLUMNS[:3] else 3] += 1
        clauses[clause.id] = (counts[0], counts[1], counts[2], counts[3])
    date = (snapshot.run or {}).get("date") or snapshot.id.rsplit("-", 1)[0]
    return Entry(snapshot.id, commit, date, snapshot.spec_version, len(cells), clauses)


def load(path: Path = SNAPSHOTS_PATH) -> list[Entry]:
    """The published snapshots, oldest first; none when the file does not exist yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise model.ReportError(f"{path}: cannot be read: {exc}") from None
    try:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version is {data.get('schema_version')!r}, not "
                             f"{SCHEMA_VERSION}")
        entries = []
        for item in data["snapshots"]:
            clauses = {str(k): tuple(int(n) for n in v) for k, v in item["clauses"].items()}
            if any(len(v) != len(COLUMNS) for v in clauses.values()):
                raise ValueError(f"{item['id']}: a clause without {len(COLUMNS)} counts")
            entries.append(Entry(str(item["id"]), str(item["commit"]), str(item["date"]),
                                 str(item["spec"]), int(item["cells"]),
                                 clauses))  # type: ignore[arg-type]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise model.ReportError(f"{path}: not a list of published snapshots: {exc}") from None
    return entries


def dumps(entries: Sequence[Entry]) -> str:
    """Sorted keys, one line per snapshot field and per clause: stable bytes, small diffs."""
    blocks = []
    for entry in entries:
        data = entry.as_json()
        head = ",\n".join(f"   {json.dumps(k)}: {json.dumps(data[k])}"
                          for k in ("cells", "commit", "date", "id", "spec"))
        clauses = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}"
                             for k, v in data["clauses"].items())
        blocks.append("  {\n   \"clauses\": {\n" + clauses + "\n   },\n" + head + "\n  }")
    body = ",\n".join(blocks)
    return ('{\n "schema_version": ' + str(SCHEMA_VERSION) + ',\n "snapshots": ['
            + (f"\n{body}\n " if body else "") + "]\n}\n")


def record(entry: Entry, path: Path = SNAPSHOTS_PATH) -> bool:
    """Append ``entry`` unless a snapshot with its id is listed already; True if written."""
    entries = load(path)
    if any(e.id == entry.id for e in entries):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, dumps([*entries, entry]))
    return True


_PUBLISHED: dict[str, list[Entry]] = {}


def attach(snapshot: model.Snapshot, path: Path = SNAPSHOTS_PATH,
           publishing: bool = False) -> list[Entry]:
    """Read the published list for this snapshot's pages (a build's ``--snapshots`` file);
    ``publishing``: with this snapshot in it (the previous one is still read as previous)."""
    entries = load(path)
    if publishing:
        entries = including(snapshot, entries)
    _PUBLISHED[snapshot.id] = entries
    return entries


def published(snapshot: model.Snapshot) -> list[Entry]:
    """The list :func:`attach` read for this snapshot, else the committed one."""
    return _PUBLISHED[snapshot.id] if snapshot.id in _PUBLISHED else load()


def including(snapshot: model.Snapshot, entries: Sequence[Entry]) -> list[Entry]:
    """The published list, with this snapshot last when it is not published (yet)."""
    if any(e.id == snapshot.id for e in entries):
        return list(entries)
    return [*entries, summarise(snapshot, cite.pin(snapshot).commit or "")]


def previous(snapshot: model.Snapshot, entries: Sequence[Entry]) -> Entry | None:
    """The published snapshot before this one: the entry before its own, or the last one."""
    ids = [e.id for e in entries]
    if snapshot.id in ids:
        at = ids.index(snapshot.id)
        return entries[at - 1] if at else None
    return entries[-1] if entries else None


# ---------------------------------------------------------------------------------------------
# What changed between two entries


@dataclass(frozen=True)
class ClauseChange:
    clause: str
    before: Counts | None  # None: the clause is new
    after: Counts | None  # None: the clause was removed

    def describe(self) -> str:
        if self.before is None:
            return "new clause"
        if self.after is None:
            return "no longer in the spec"
        return ", ".join(f"{name} {b} → {a}" for name, b, a in
                         zip(COLUMNS, self.before, self.after) if b != a)


def diff(before: Entry, after: Entry) -> list[ClauseChange]:
    """Clauses whose counts changed, in the newer snapshot's order, then removed ones."""
    out = [ClauseChange(k, before.clauses.get(k), v) for k, v in after.clauses.items()
           if before.clauses.get(k) != v]
    out += [ClauseChange(k, v, None) for k, v in before.clauses.items()
            if k not in after.clauses]
    return out


def change_summary(before: Entry | None, after: Entry) -> str:
    """One sentence for a History row."""
    if before is None:
        return f"First snapshot: {after.cells} release cells, spec {after.spec}."
    parts = []
    if before.spec != after.spec:
        parts.append(f"spec {before.spec} → {after.spec}")
    if before.cells != after.cells:
        parts.append(f"release cells {before.cells} → {after.cells}")
    changed = diff(before, after)
    if changed:
        parts.append(f"{len(changed)} clause{'s' if len(changed) != 1 else ''} changed")
    return ("; ".join(parts) or "nothing changed in the per-clause counts") + "."


# ---------------------------------------------------------------------------------------------
# Pages


def _snapshot_link(entry: Entry, listed: Sequence[Entry], page: str = "index.html") -> Markup:
    """The snapshot's own page when it is published and the site has a public URL (a local
    build has no snapshot folders), else its id."""
    if cite.site_url() is None or entry not in listed:
        return code(entry.id)
    return link(f"{cite.snapshot_root(entry.id)}{page}", entry.id)


def _commit(entry: Entry) -> Markup:
    if not entry.commit:
        return text("uncommitted")
    url = cite.commit_url(entry.commit)
    return link(url, entry.commit[:12]) if url else code(entry.commit[:12])


def page(snapshot: model.Snapshot, listed: Sequence[Entry], root: str = "") -> str:
    """The History page: every snapshot, newest first, and what changed in it."""
    entries = including(snapshot, listed)
    lines = ["# History", "",
             "Every published snapshot of the results, newest first: its commit, and what "
             "changed against the snapshot before it. A snapshot's own pages stay at "
             f"`{cite.SNAPSHOTS_FOLDER}/<id>/` on this site, so a citation keeps opening the "
             "data it cited. [Changes](changes.md) has the details against the previous "
             "published snapshot.", ""]
    if cite.site_url() is None:
        lines += ["This is a local build: snapshot folders exist only on the published site.",
                  ""]
    rows = []
    for i in range(len(entries) - 1, -1, -1):
        entry, before = entries[i], (entries[i - 1] if i else None)
        changed = diff(before, entry) if before else []
        named = Markup(", ").join(
            link(f"{root}clauses/{c.clause}.html", c.clause) + text(f" ({c.describe()})")
            for c in changed[:CHANGED_LIMIT])
        more = text(f"; and {len(changed) - CHANGED_LIMIT} more") \
            if len(changed) > CHANGED_LIMIT else Markup("")
        this = text(" (this build, not published)") if entry.id == snapshot.id and \
            not any(e.id == entry.id for e in listed) else Markup("")
        rows.append([_snapshot_link(entry, listed) + this, text(entry.date), _commit(entry),
                     text(entry.spec), entry.cells,
                     text(change_summary(before, entry) + (" " if changed else ""))
                     + named + more])
    lines.append(raw(part("scroll")(table(
        ["Snapshot", "Date", "Commit", "Spec", "Release cells", "What changed"], rows))))
    return "\n".join(lines) + "\n"


def clause_section(snapshot: model.Snapshot, clause_id: str,
                   listed: Sequence[Entry] | None = None) -> list[str]:
    """``## History across snapshots`` for a clause page: its counts in every snapshot."""
    listed = published(snapshot) if listed is None else listed
    entries = including(snapshot, listed)
    lines = ["## History across snapshots" + NOT_SEARCHED, ""]
    rows = []
    last: Counts | None = None
    for entry in entries:
        counts = entry.clauses.get(clause_id)
        if counts is None:
            continue
        change = ("first measured" if last is None else
                  ClauseChange(clause_id, last, counts).describe() or "unchanged")
        last = counts
        rows.append([_snapshot_link(entry, listed, f"clauses/{clause_id}.html"),
                     text(entry.date),
                     *counts, text(change)])
    if not rows:
        return [*lines, "Not in any snapshot yet.", ""]
    rows.reverse()  # newest first
    lines.append(raw(part("scroll")(table(
        ["Snapshot", "Date", "Conforms", "Deviates", "n/a", "Not measured", "Change"], rows))))
    lines += ["Release cells per verdict in each snapshot (FastAPI releases for a FastAPI-level "
              "clause); [History](../history.md) lists every snapshot.", ""]
    return lines


def changes_section(snapshot: model.Snapshot, listed: Sequence[Entry]) -> str:
    """For the Changes page: which published snapshot it compares with, and the per-clause
    counts that changed (available even where the earlier commit cannot be read)."""
    before = previous(snapshot, listed)
    if before is None:
        return ""  # the Changes page says there is nothing to compare with
    after = summarise(snapshot, cite.pin(snapshot).commit or "")
    changed = diff(before, after)
    lines = ["", "## Per clause, against the previous published snapshot", "",
             raw(part("para")(text("Published snapshot ") + _snapshot_link(before, listed)
                              + text(f" ({before.date}, commit ") + _commit(before)
                              + text(f"): {change_summary(before, after)}")))]
    if changed:
        rows = [[link(f"clauses/{c.clause}.html", c.clause), text(c.describe())]
                for c in changed]
        lines.append(raw(table(["Clause", "Release cells per verdict"], rows)))
    return "\n".join(lines) + "\n"
