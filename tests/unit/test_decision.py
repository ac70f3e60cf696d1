"""The Decision page and the brief: both render from a small synthetic snapshot, say "not
measured yet" for every absent input, keep the brief short with every link pinned, and take
the A/B mapping of every candidate patch from its header."""

from __future__ import annotations

import html
import re

import pytest

from bgmatrix import cli
from bgmatrix.site import brief, decision
from tests.unit.test_report import make_result, snapshot_of

REQS = decision.requirements()


def candidate(name: str, outcomes: dict[str, tuple[str, str]]) -> dict:
    return make_result(f"candidate-{name}_py3.11", "candidate", "0.165.0", "1.10.0", "3.11",
                       outcomes, candidate=name)


@pytest.fixture
def snapshot():
    """Today's 0.165.0 drops; ``recommended`` passes everything; ``recommended-in-place``
    fails ISO-1 only; ``copy-on-send`` fails the conflict; ``warn`` fails RES-3."""
    passing = {cid: ("conforms", "ran") for cid in REQS}
    found = {
        "fa-0.165.0_st-1.10.0_py3.11": make_result(
            "fa-0.165.0_st-1.10.0_py3.11", "fastapi", "0.165.0", "1.10.0", "3.11",
            {**passing, "ATTACH-3": ("deviates", "drop"), "ISO-1": ("deviates", "carried")}),
        "candidate-recommended_py3.11": candidate("recommended", passing),
        "candidate-recommended-in-place_py3.11": candidate(
            "recommended-in-place", {**passing, "ISO-1": ("deviates", "1:isolated 2:carried")}),
        "candidate-copy-on-send_py3.11": candidate(
            "copy-on-send", {**passing, "ATTACH-3": ("deviates", "drop")}),
        "candidate-warn_py3.11": candidate(
            "warn", {**passing, "RES-3": ("deviates", "identity:false-warning")}),
    }
    found["candidate-recommended_py3.11"]["cell"]["build"] = {
        "base_sdist_sha256": "a" * 64, "patch_sha256": "b" * 64}
    return snapshot_of(found)


@pytest.fixture
def absent(tmp_path, monkeypatch):
    """Every decision input missing."""
    for name in ("COMPAT_PATH", "COST_PATH", "UPSTREAM_PATH"):
        monkeypatch.setattr(decision, name, tmp_path / f"{name}.json")
    monkeypatch.setattr(decision, "DECISION_DIR", tmp_path / "decision")
    monkeypatch.setattr(decision.regression, "PATH", tmp_path / "regression.json")


def test_the_requirements_are_read_from_the_spec():
    assert REQS[:2] == ["ATTACH-3", "ATTACH-4"]
    for cid in ("ATTACH-6", "ATTACH-7", "ATTACH-16", "ATTACH-17", "ISO-1", "ISO-2", "ISO-3",
                "ISO-5", "EXEC-7", "RES-2", "RES-3", *(f"RES-{n}" for n in range(6, 12))):
        assert cid in REQS
    assert not {"RES-1", "RES-4", "RES-5"} & set(REQS)  # withdrawn


def test_the_ab_mapping_covers_every_candidate_patch():
    cands = decision.candidates()
    assert cands, "no candidates/*.patch"
    for name, cand in cands.items():
        assert cand.decision_a and cand.decision_b, f"{name}.patch: no '# Decision A:' line"
        assert cand.conflict_kind in ("drop", "warn", "merge"), (name, cand.decision_a)
        assert cand.copy_on_send is not None
        assert cand.routing_added, f"{name}.patch adds nothing to fastapi/routing.py"
    # the pairs that differ only in B exist
    assert cands["recommended"].decision_a == cands["recommended-in-place"].decision_a
    assert cands["recommended"].copy_on_send and not cands["recommended-in-place"].copy_on_send
    assert cands["copy-on-send"].conflict_kind == "drop" and cands["copy-on-send"].copy_on_send


def test_the_page_shows_both_decisions_cards_and_a_computed_conclusion(snapshot, absent):
    text = html.unescape(decision.decision(snapshot))  # as a reader sees it
    first = next(line for line in text.splitlines() if line.startswith("**The recommended"))
    assert f"meets {len(REQS)} of {len(REQS)} requirements" in first
    assert "every other candidate fails at least one" not in first  # some have no result
    assert "fails ISO-1" in first and "fails RES-3" in first
    assert "## By decision A" in text and "## By decision B" in text
    assert "today: " in text
    assert "B (copy-on-send) decides it" in text  # ISO-1: recommended vs in place
    assert "A (the conflict) decides it" in text  # ATTACH-3: drop vs merge
    assert "✘ fail" in text and "✔ pass" in text and "…" not in text
    for name in decision.candidates():
        assert f"### {name}" in text
    assert "a" * 64 in text and "b" * 64 in text  # the build hashes
    assert "The patch file has changed since" in text
    assert "(brief.md)" in text and "(decision/precedent.md)" in text
    assert "(decision/usage.md)" in text


def test_absent_inputs_render_not_measured_yet(snapshot, absent):
    text = decision.decision(snapshot)
    for section in ("## Compatibility", "## Cost", "## Upstream readiness",
                    "## FastAPI's own tests"):
        body = text.split(section, 1)[1].split("\n## ", 1)[0]
        assert "Not measured yet" in body, section
    pages = dict(decision.extra_pages(snapshot))
    assert "Not measured yet" in pages["decision/precedent.md"]
    out = brief.markdown(snapshot)
    assert f"Compatibility: {decision.NOT_MEASURED}" in out
    assert f"Cost: {decision.NOT_MEASURED}" in out
    assert f"Precedent: {decision.NOT_MEASURED}" in out


def test_a_broken_input_is_named_not_skipped(snapshot, absent, tmp_path):
    (tmp_path / "COST_PATH.json").write_text("{not json", encoding="utf-8")
    text = decision.decision(snapshot)
    assert "cannot be read" in text.split("## Cost", 1)[1].split("\n## ", 1)[0]


def test_the_page_and_brief_render_the_committed_inputs(snapshot):
    text = decision.decision(snapshot)
    assert "## Compatibility" in text
    out = brief.markdown(snapshot)
    assert "### Migration path" in out and "### Traps measured" in out


def test_the_brief_is_short_and_every_link_is_pinned(snapshot, monkeypatch):
    monkeypatch.setenv("BGMATRIX_SITE_URL", "https://owner.github.io/bgmatrix/")
    out = brief.markdown(snapshot)
    assert brief.word_count(out) < 750
    links = re.findall(r"\]\(([^)]+)\)", out)
    assert links
    for url in links:  # the snapshot's own published pages
        assert url.startswith(f"https://owner.github.io/bgmatrix/snapshots/{snapshot.id}/"), url
    # the options carry their code, the traps their candidates
    assert "```python" in out and "_InjectedThenOwnBackground" in out
    trap = next(line for line in out.splitlines() if line.startswith("- **False warnings**"))
    assert "`warn`" in trap and "`recommended`" not in trap


def test_the_brief_command_prints_markdown(snapshot, monkeypatch, capsys):
    monkeypatch.setattr(brief.model, "load_snapshot", lambda folder: snapshot)
    assert cli.main(["brief"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## #11215") and snapshot.id in out
