"""Citations that last: the site URL from the environment, a publishing build that refuses a
placeholder, and every citation link pinned to its snapshot (pages) or commit (raw data)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bgmatrix import cli
from bgmatrix.site import cite, history, model
from tests.unit.test_report import synthetic_results, write_results

SITE = "https://someone.github.io/bgmatrix/"
REPO = "https://github.com/someone/bgmatrix"
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture
def no_urls(monkeypatch):
    monkeypatch.delenv(cite.SITE_URL_ENV, raising=False)
    monkeypatch.delenv(cite.REPO_URL_ENV, raising=False)


@pytest.fixture
def urls(monkeypatch):
    monkeypatch.setenv(cite.SITE_URL_ENV, SITE.rstrip("/"))  # the slash is added
    monkeypatch.setenv(cite.REPO_URL_ENV, REPO + ".git")  # and .git dropped


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def committed_results(tmp_path: Path, limit: int = 6) -> tuple[Path, str]:
    """A git checkout with results/ committed; returns the results folder and the commit."""
    repo = tmp_path / "repo"
    folder = write_results(repo / "results", synthetic_results(limit=limit))
    git(repo, "init", "-q")
    git(repo, "add", "results")
    git(repo, "commit", "-qm", "results")
    return folder, git(repo, "rev-parse", "HEAD")


# ---------------------------------------------------------------------------------------------
# Configuration


def test_the_site_url_comes_from_the_environment(urls):
    assert cite.site_url() == SITE and cite.base_url() == SITE
    assert cite.repo_url() == REPO


def test_without_a_url_links_are_relative_to_the_site_root(no_urls):
    assert cite.site_url() is None and cite.repo_url() is None
    assert cite.base_url() == "/"
    assert cite.clause_url("ATTACH-3") == "/clauses/ATTACH-3.html"


def test_mkdocs_yml_holds_no_site_url_of_its_own():
    config = (Path(cite.__file__).parents[2] / "site" / "mkdocs.yml").read_text("utf-8")
    (line,) = [x for x in config.splitlines() if x.startswith("site_url:")]
    assert cite.SITE_URL_ENV in line and "://" not in line


@pytest.mark.parametrize("url", ["https://bgmatrix.example/", "https://example.com/x/",
                                 "http://localhost:8000/", "https://docs.test/",
                                 "ftp://someone.github.io/", "someone.github.io/bgmatrix"])
def test_placeholders_are_recognised(url):
    assert cite.placeholder(url)


def test_a_real_pages_url_is_no_placeholder():
    assert cite.placeholder(SITE) is None
    assert cite.placeholder("https://bgmatrix.readthedocs.io/en/latest/") is None


@pytest.mark.parametrize("env, says", [
    ({}, cite.SITE_URL_ENV),
    ({cite.SITE_URL_ENV: "https://bgmatrix.example/"}, "placeholder"),
    ({cite.SITE_URL_ENV: SITE}, cite.REPO_URL_ENV),
    ({cite.SITE_URL_ENV: SITE, cite.REPO_URL_ENV: REPO}, "committed"),  # not a git checkout
])
def test_a_publishing_build_refuses_in_one_line(tmp_path, monkeypatch, capsys, no_urls, env,
                                                says):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    folder = write_results(tmp_path / "results", synthetic_results(limit=3))
    listed = tmp_path / "snapshots.json"
    code = cli.main(["report", "--publish", "--results", str(folder), "--out",
                     str(tmp_path / "gen"), "--site-dir", str(tmp_path / "site"),
                     "--snapshots", str(listed)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "site").exists() and not (tmp_path / "gen").exists()
    assert not listed.exists()


def test_a_local_build_says_once_that_it_has_no_url(tmp_path, capsys, no_urls):
    folder = write_results(tmp_path / "results", synthetic_results(limit=3))
    (tmp_path / "none").mkdir()
    assert cli.main(["report", "--no-build", "--results", str(folder), "--out",
                     str(tmp_path / "gen"), "--previous", str(tmp_path / "none"),
                     "--snapshots", str(tmp_path / "snapshots.json")]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{cite.SITE_URL_ENV} is not set") == 1


# ---------------------------------------------------------------------------------------------
# Pinned links


def test_the_commit_is_the_clean_results_folders_last_commit(tmp_path):
    folder, commit = committed_results(tmp_path)
    pin = cite.results_pin(folder)
    assert pin.commit == commit and pin.folder == "results"
    (folder / "stray.json").write_text("{}", encoding="utf-8")  # uncommitted: no pin
    assert cite.results_pin(folder).commit is None
    assert cite.results_pin(tmp_path).commit is None  # not a checkout


def test_every_citation_link_carries_the_snapshot_id_or_commit(tmp_path, urls):
    folder, commit = committed_results(tmp_path)
    snapshot = model.load_snapshot(folder)
    cite.locate(snapshot, folder)
    cell = next(iter(snapshot.results))
    root = f"{SITE}snapshots/{snapshot.id}/"
    for text in (cite.clause_markdown(snapshot, "ATTACH-3"),
                 cite.cell_markdown(snapshot, "ATTACH-3", cell)):
        assert snapshot.id in text and commit[:12] in text
        links = LINK.findall(text)
        assert len(links) == 3
        for url in links:
            assert url.startswith((root, f"{REPO}/")), url
            assert snapshot.id in url or commit in url, url
    cell_text = cite.cell_markdown(snapshot, "ATTACH-3", cell)
    assert f"({root}cells/{cell}.html)" in cell_text
    assert f"({REPO}/blob/{commit}/results/{cell}.json)" in cell_text
    clause_text = cite.clause_markdown(snapshot, "ATTACH-3")
    assert f"({root}clauses/ATTACH-3.html)" in clause_text
    assert f"({REPO}/tree/{commit}/results)" in clause_text


def test_bgmatrix_cite_prints_the_pinned_citation(tmp_path, cite_out, urls):
    folder, commit = committed_results(tmp_path)
    cell = next(p.stem for p in sorted(folder.glob("fa-*.json")))
    out = cite_out(folder, cell=cell)
    assert f"{REPO}/blob/{commit}/results/{cell}.json" in out
    assert f"{SITE}snapshots/{model.load_snapshot(folder).id}/cells/{cell}.html" in out


def test_uncommitted_results_are_cited_as_such(tmp_path, no_urls):
    folder = write_results(tmp_path / "results", synthetic_results(limit=3))
    snapshot = model.load_snapshot(folder)
    cite.locate(snapshot, folder)
    text = cite.clause_markdown(snapshot, "ATTACH-3")
    assert snapshot.id in text and "uncommitted results" in text
    assert "(/clauses/ATTACH-3.html)" in text and "(/downloads.html)" in text


# ---------------------------------------------------------------------------------------------
# A publishing build, end to end


def test_publish_builds_pinned_pages_and_records_the_snapshot_once(tmp_path, capsys, urls):
    folder, commit = committed_results(tmp_path)
    listed = tmp_path / "snapshots.json"
    args = ["report", "--publish", "--results", str(folder), "--out", str(tmp_path / "gen"),
            "--site-dir", str(tmp_path / "site"), "--snapshots", str(listed)]
    assert cli.main(args) == 0
    snapshot = model.load_snapshot(folder)
    entries = history.load(listed)
    assert [(e.id, e.commit) for e in entries] == [(snapshot.id, commit)]
    assert "added to" in capsys.readouterr().out
    site = tmp_path / "site"
    clause = (site / "clauses" / "ATTACH-3.html").read_text(encoding="utf-8")
    assert f"{SITE}snapshots/{snapshot.id}/clauses/ATTACH-3.html" in clause
    assert f'<link rel="canonical" href="{SITE}clauses/ATTACH-3.html"' in clause
    assert "History across snapshots" in clause
    page = (site / "history.html").read_text(encoding="utf-8")
    assert f'href="{SITE}snapshots/{snapshot.id}/index.html"' in page
    assert "not published" not in page
    before = listed.read_bytes()
    assert cli.main(args) == 0  # the same snapshot again: listed once
    assert listed.read_bytes() == before
    assert json.loads(before)["snapshots"][0]["commit"] == commit
