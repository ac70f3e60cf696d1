"""What changed between the previous published snapshot of results/ and this one.

The previous snapshot is the last *published* one (matrix/snapshots.json, see
:mod:`bgmatrix.site.history`), read through git at the commit it was published from, unless a
folder is given: never simply HEAD, which in CI is the commit the sweep has just made. Old
results are read leniently: a file that no longer parses, or that an older schema wrote, is
reported as unreadable rather than stopping the site, because history cannot be fixed; files
of schema 2, which differs only in how it is stored, are compared as they are.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bgmatrix import results
from bgmatrix.site import model
from bgmatrix.spec import ROOT

#: Changed-verdict rows listed on the page; beyond this, a count (the exports have the rest).
ROW_LIMIT = 400


@dataclass
class Previous:
    source: str  # what was compared with, for the page: "HEAD (abc1234)" or a folder
    results: dict[str, dict]
    unreadable: list[str] = field(default_factory=list)


@dataclass
class Changes:
    previous: Previous | None
    new: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    states: list[tuple[str, str, str]] = field(default_factory=list)  # cell, before, after
    verdicts: list[tuple[str, str, model.Outcome, model.Outcome]] = field(default_factory=list)
    suite: list[tuple[str, str, str]] = field(default_factory=list)  # cell, before, after

    @property
    def empty(self) -> bool:
        return not (self.new or self.removed or self.states or self.verdicts or self.suite)


#: Stored schemas that differ from the current one in storage only (schema 3 packed the
#: evidence and wrote each clause as a list): their verdicts compare as they are.
SAME_VERDICTS = (2,)


def _parse(name: str, text: str, unreadable: list[str]) -> dict | None:
    try:
        data = json.loads(text)
        if not (isinstance(data, dict) and data.get("schema_version") in SAME_VERDICTS):
            results.validate(data, name)
        else:  # checked as far as the comparison reads it
            for key in ("cell", "provenance", "clauses"):
                if not isinstance(data.get(key), dict):
                    raise ValueError(f"schema_version 2 without a {key!r} mapping")
            if not isinstance(data.get("state"), str) or "suite_hash" not in data["provenance"]:
                raise ValueError("schema_version 2 without a state or a suite hash")
        return dict(data, clauses=results.clause_entries(data))
    except (ValueError, KeyError, TypeError, IndexError, results.ResultError) as exc:
        unreadable.append(f"{name}: {str(exc)[:200]}")
        return None


def from_folder(folder: Path) -> Previous:
    found: dict[str, dict] = {}
    unreadable: list[str] = []
    for path in results.result_paths(folder):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            unreadable.append(f"{path.name}: {exc}")
            continue
        if (data := _parse(path.name, text, unreadable)) is not None:
            found[path.stem] = data
    return Previous(str(folder), found, unreadable)


def from_git(rev: str = "HEAD", repo: Path = ROOT, folder: str = "results") -> Previous | None:
    """The results committed at ``rev``, read through one ``git cat-file --batch`` process
    (one ``git show`` per file would cost seconds on a full matrix)."""
    def git(*args: str, stdin: bytes | None = None) -> bytes:
        return subprocess.run(["git", "-C", str(repo), *args], input=stdin,
                              capture_output=True, check=True, timeout=60).stdout

    try:
        commit = git("rev-parse", "--short", rev).decode().strip()
        names = [n for n in git("ls-tree", "--name-only", rev, f"{folder}/").decode().split("\n")
                 if n.endswith(".json") and Path(n).name != "run.json"]
        batch = git("cat-file", "--batch",
                    stdin="".join(f"{rev}:{n}\n" for n in names).encode()) if names else b""
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout, or no commit yet: nothing to compare with
    found: dict[str, dict] = {}
    unreadable: list[str] = []
    pos = 0
    for name in names:
        header_end = batch.index(b"\n", pos)
        header = batch[pos:header_end].split()
        size = int(header[2]) if len(header) == 3 else 0
        body = batch[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
        if (data := _parse(name, body.decode("utf-8", "replace"), unreadable)) is not None:
            found[Path(name).stem] = data
    return Previous(f"the committed results at {rev} ({commit})", found, unreadable)


def from_published(snapshot_id: str, commit: str, repo: Path, folder: str) -> Previous | None:
    """The results of a published snapshot, read at its commit (None when the checkout does
    not have that commit, e.g. a shallow clone)."""
    found = from_git(commit, repo=repo, folder=folder)
    if found is not None:
        found.source = f"the published snapshot {snapshot_id} (commit {commit[:12]})"
    return found


def compare(previous: Previous | None, snapshot: model.Snapshot) -> Changes:
    changes = Changes(previous)
    if previous is None:
        return changes
    before, after = previous.results, snapshot.results
    changes.new = sorted(set(after) - set(before), key=lambda c: model.cell_sort_key(after[c]))
    changes.removed = sorted(set(before) - set(after))
    ids = [c.id for c in snapshot.clauses]
    for cid in sorted(set(before) & set(after), key=lambda c: model.cell_sort_key(after[c])):
        old, new = before[cid], after[cid]
        old_hash, new_hash = old["provenance"]["suite_hash"], new["provenance"]["suite_hash"]
        if old_hash != new_hash:
            changes.suite.append((cid, old_hash, new_hash))
        if old["state"] != new["state"]:
            # Every clause changes with the state; one row says it better than 48.
            changes.states.append((cid, old["state"], new["state"]))
            continue
        for clause_id in ids:
            was, now = model.outcome(old, clause_id), model.outcome(new, clause_id)
            if was != now:
                changes.verdicts.append((cid, clause_id, was, now))
    return changes
