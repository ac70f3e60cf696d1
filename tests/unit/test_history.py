"""Published snapshots: the committed list, the History page, each clause's history, and
Changes against the previous *published* snapshot (not against HEAD)."""

from __future__ import annotations

import copy
import html
import subprocess
from pathlib import Path

import pytest

from bgmatrix import cli
from bgmatrix.site import cite, history, model
from tests.unit.test_report import snapshot_of, synthetic_results, write_results

A = history.Entry("2026-11-01-aaaaaaa", "a" * 40, "2026-11-01", "0.1.0", 10,
                  {"ATTACH-3": (4, 6, 0, 0), "ATTACH-4": (10, 0, 0, 0)})
B = history.Entry("2026-11-20-bbbbbbb", "b" * 40, "2026-11-20", "0.2.0", 12,
                  {"ATTACH-3": (4, 7, 0, 1), "ATTACH-4": (12, 0, 0, 0), "SHAPE-2": (0, 12, 0, 0)})
C = history.Entry("2026-12-02-ccccccc", "c" * 40, "2026-12-02", "0.2.0", 12,
                  {"ATTACH-3": (4, 7, 0, 1), "ATTACH-4": (12, 0, 0, 0), "SHAPE-2": (0, 12, 0, 0)})


@pytest.fixture(autouse=True)
def no_urls(monkeypatch):
    monkeypatch.delenv(cite.SITE_URL_ENV, raising=False)
    monkeypatch.delenv(cite.REPO_URL_ENV, raising=False)


def test_the_list_round_trips_with_stable_bytes_and_one_line_per_clause(tmp_path):
    path = tmp_path / "snapshots.json"
    assert history.load(path) == []  # no file yet: nothing published
    assert history.record(A, path) and history.record(B, path)
    assert not history.record(B, path)  # listed already
    assert history.load(path) == [A, B]
    text = path.read_text(encoding="utf-8")
    assert text == history.dumps([A, B])
    assert '    "ATTACH-3": [4, 7, 0, 1],' in text.splitlines()
    assert history.dumps([]) == '{\n "schema_version": 1,\n "snapshots": []\n}\n'


def test_a_broken_list_stops_the_report_in_one_line(tmp_path):
    path = tmp_path / "snapshots.json"
    path.write_text('{"schema_version": 1, "snapshots": [{"id": "x"}]}', encoding="utf-8")
    with pytest.raises(model.ReportError, match="not a list of published snapshots"):
        history.load(path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(model.ReportError, match="cannot be read"):
        history.load(path)


def test_the_committed_list_is_valid():
    history.load()


def test_previous_is_the_published_snapshot_before_this_one():
    snapshot = snapshot_of(synthetic_results(limit=3))
    assert history.previous(snapshot, []) is None
    assert history.previous(snapshot, [A, B]) == B  # not published yet: the last one
    mine = history.summarise(snapshot, "d" * 40)
    assert history.previous(snapshot, [A, mine, B]) == A  # published: the one before it
    assert history.previous(snapshot, [mine, A]) is None


def test_diff_names_changed_new_and_removed_clauses():
    changed = history.diff(A, B)
    assert [(c.clause, c.describe()) for c in changed] == [
        ("ATTACH-3", "deviates 6 → 7, not measured 0 → 1"), ("ATTACH-4", "conforms 10 → 12"),
        ("SHAPE-2", "new clause")]
    assert [c.describe() for c in history.diff(B, A)][-1] == "no longer in the spec"
    assert history.diff(B, C) == []
    assert history.change_summary(A, B) == ("spec 0.1.0 → 0.2.0; release cells 10 → 12; "
                                            "3 clauses changed.")
    assert history.change_summary(None, A).startswith("First snapshot")
    assert history.change_summary(B, C) == "nothing changed in the per-clause counts."


def test_summarise_counts_release_cells_per_verdict():
    found = synthetic_results(limit=8, fail_every=3)
    snapshot = snapshot_of(found)
    entry = history.summarise(snapshot, "e" * 40)
    releases = [r for r in found.values() if r["cell"]["kind"] != "candidate"]
    assert entry.cells == len(releases) and entry.id == snapshot.id
    assert list(entry.clauses) == [c.id for c in snapshot.clauses]
    assert all(sum(v) == len(releases) for v in entry.clauses.values())
    failed = sum(r["state"] != "ok" for r in releases)
    assert failed and entry.clauses["ATTACH-3"][3] >= failed


def test_the_history_page_lists_every_snapshot_newest_first_with_what_changed(monkeypatch):
    snapshot = snapshot_of(synthetic_results(limit=3))
    text = html.unescape(history.page(snapshot, [A, B]))
    rows = [A.id, B.id, snapshot.id]
    assert all(r in text for r in rows)
    assert text.index(snapshot.id) < text.index(B.id) < text.index(A.id)
    assert "this build, not published" in text
    assert "deviates 6 → 7, not measured 0 → 1" in text and "new clause" in text
    assert "local build" in text and "snapshots/2026" not in text
    monkeypatch.setenv(cite.SITE_URL_ENV, "https://someone.github.io/bgmatrix/")
    monkeypatch.setenv(cite.REPO_URL_ENV, "https://github.com/someone/bgmatrix")
    text = html.unescape(history.page(snapshot, [A, B]))
    assert f'href="https://someone.github.io/bgmatrix/snapshots/{B.id}/index.html"' in text
    assert f'href="https://github.com/someone/bgmatrix/commit/{B.commit}"' in text
    assert f"snapshots/{snapshot.id}/" not in text  # not published: no folder to link


def test_a_clause_page_shows_its_history_across_snapshots():
    snapshot = snapshot_of(synthetic_results(limit=3))
    published = [A, B, history.summarise(snapshot, "f" * 40)]
    lines = html.unescape("\n".join(history.clause_section(snapshot, "SHAPE-2", published)))
    assert "## History across snapshots" in lines
    assert A.id not in lines  # SHAPE-2 was not in the spec then
    assert lines.index(snapshot.id) < lines.index(B.id)
    assert "first measured" in lines
    attach = html.unescape("\n".join(history.clause_section(snapshot, "ATTACH-3", [A, B])))
    assert "deviates 6 → 7, not measured 0 → 1" in attach and snapshot.id in attach
    assert "Not in any snapshot yet" in "\n".join(
        history.clause_section(snapshot, "NOPE-1", []))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def test_changes_compare_with_the_previous_published_snapshot_not_head(tmp_path):
    """Published: snapshot 1. Then results 2 committed, then results 3 committed (HEAD, what CI
    just made). Changes for 3 compare with 1, the last published, not with 2."""
    repo = tmp_path / "repo"
    found = synthetic_results(limit=4)
    folder = write_results(repo / "results", found)
    git(repo, "init", "-q")
    git(repo, "add", "results")
    git(repo, "commit", "-qm", "one")
    first = model.load_snapshot(folder)
    listed = tmp_path / "snapshots.json"
    history.record(history.summarise(first, git(repo, "rev-parse", "HEAD")), listed)
    cells = list(found)
    second = copy.deepcopy(found)
    second[cells[0]]["clauses"]["ATTACH-3"] = {"verdict": "conforms", "label": "ran",
                                                "tests": []}
    write_results(folder, second)
    git(repo, "commit", "-qam", "two")
    third = copy.deepcopy(second)
    third[cells[1]]["clauses"]["ATTACH-4"] = {"verdict": "conforms", "label": "warn",
                                               "tests": []}
    write_results(folder, third)
    git(repo, "commit", "-qam", "three")
    assert cli.main(["report", "--no-build", "--results", str(folder), "--out",
                     str(tmp_path / "gen"), "--snapshots", str(listed)]) == 0
    page = html.unescape((tmp_path / "gen" / "changes.md").read_text(encoding="utf-8"))
    assert f"the published snapshot {first.id}" in page
    # Both changes since the published snapshot, the first of them made before HEAD~1.
    assert "## Changed verdicts and labels (2)" in page  # HEAD~1 would show one
    assert "ATTACH-3" in page and "ATTACH-4" in page
    assert "Per clause, against the previous published snapshot" in page
    assert (tmp_path / "gen" / "history.md").is_file()
    assert history.load(listed)[-1].id == first.id  # not publishing: nothing recorded
