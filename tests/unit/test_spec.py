"""bgmatrix.spec reads the clause anatomy of spec/*.md: meta line (Level, Scenarios, Since,
Scope), keyword line, the recommended rule's REC clauses, withdrawn IDs and the changelog."""

import shutil
from pathlib import Path

import pytest

from bgmatrix import spec

FULL = (
    "### ATTACH-99 — A clause {#ATTACH-99}\n\n"
    "Level: FastAPI · Scenarios: 3, 30 · Since: 0.2.0 · Scope: #11215\n\n"
    "**MUST NOT.** Tasks MUST NOT be lost silently.\n\n"
    "*Rationale.* Because.\n"
)
OUTSIDE = (
    "### MW-99 — Another {#MW-99}\n\n"
    "Level: Starlette · Scenarios: 27 · Since: 0.1.0 · Scope: outside #11215\n\n"
    "**SHOULD.** Something SHOULD happen.\n"
)
REC = (
    "### REC-9 — A rule {#REC-9}\n\n"
    "Level: FastAPI · Scenarios: 30 · Since: 0.2.0 · Scope: #11215\n\n"
    "**MUST.** The composite MUST await the injected object.\n\n"
    "*Rationale.* Tasks added later.\n\n"
    "*Observed by.* [RES-6](#RES-6) and [ATTACH-3](attachment.md#ATTACH-3), then [RES-6](#RES-6)"
    " again.\n"
)


def spec_copy(folder: Path) -> Path:
    shutil.copytree(spec.SPEC_DIR, folder, ignore=shutil.ignore_patterns("*.tmp*"))
    return folder


def append(folder: Path, chapter: str, text: str) -> None:
    with open(folder / f"{chapter}.md", "a", encoding="utf-8") as fh:
        fh.write("\n" + text)


def test_the_full_meta_line_is_parsed():
    clause, other = spec.parse_chapter("attachment", FULL + "\n" + OUTSIDE)
    assert (clause.id, clause.title, clause.level, clause.keyword) == (
        "ATTACH-99", "A clause", "FastAPI", "MUST NOT")
    assert clause.scenarios == (3, 30)
    assert (clause.since, clause.in_issue, clause.graded) == ("0.2.0", True, True)
    assert clause.sentence == "Tasks MUST NOT be lost silently."
    assert clause.text.startswith("### ATTACH-99") and "MW-99" not in clause.text
    assert (other.level, other.since, other.in_issue) == ("Starlette", "0.1.0", False)


@pytest.mark.parametrize("meta", [
    "Level: FastAPI · Scenarios: 3",  # the 0.1.0 short form
    "Level: FastAPI · Scenarios: 3 · Since: 0.2.0",  # Scope missing
    "Level: FastAPI · Scenarios: 3 · Since: 0.2 · Scope: #11215",  # not a version
    "Level: FastAPI · Scenarios: 3 · Since: 0.2.0 · Scope: inside #11215",  # unknown scope
    "Level: FastAPI · Scenarios: 3 · Scope: #11215 · Since: 0.2.0",  # wrong order
])
def test_a_clause_without_the_full_meta_line_is_refused(meta):
    text = FULL.replace("Level: FastAPI · Scenarios: 3, 30 · Since: 0.2.0 · Scope: #11215", meta)
    with pytest.raises(spec.SpecError, match="ATTACH-99 lacks its Level"):
        spec.parse_chapter("attachment", text)


def test_a_clause_ends_at_the_next_heading_even_when_it_is_not_a_clause():
    text = FULL + "\n## Recommended resolution {#recommended}\n\nProse.\n\n" + OUTSIDE
    clause, _ = spec.parse_chapter("resolution", text)
    assert "Prose" not in clause.text and "Recommended" not in clause.text


def test_rec_clauses_are_parsed_with_what_observes_them():
    (rec,) = spec.parse_chapter("resolution", REC)
    assert not rec.graded
    assert rec.observed_by == ("RES-6", "ATTACH-3")  # linked IDs, in order, once each


def test_a_rec_clause_naming_no_graded_clause_is_refused():
    with pytest.raises(spec.SpecError, match="REC-9 names no graded clause"):
        spec.parse_chapter("resolution", REC.split("*Observed by.*")[0] + "*Observed by.* No.\n")


def test_the_real_spec_has_the_full_anatomy():
    clauses = spec.load()
    assert clauses and all(c.graded for c in clauses)
    assert all(c.since and c.text.count("· Since: ") == 1 for c in clauses)
    assert not {c.id for c in clauses} & spec.reserved()
    assert [c.id for c in spec.recommendation()] == [f"REC-{n}" for n in range(1, 6)]
    graded = set(spec.by_id())
    assert all(set(r.observed_by) <= graded for r in spec.recommendation())
    # Withdrawn IDs are listed in the front matter, and the newest changelog entry is this
    # version's.
    assert {"RES-1", "RES-5"} <= spec.reserved()
    assert next(iter(spec.changelog())) == spec.spec_version()


def test_the_scope_splits_the_spec():
    clauses = spec.load()
    assert spec.by_id()["ATTACH-3"].in_issue
    assert any(not c.in_issue for c in clauses)


def test_withdrawn_ids_are_parsed_with_version_and_reason(tmp_path):
    folder = spec_copy(tmp_path / "spec")
    index = folder / "index.md"
    text = index.read_text(encoding="utf-8")
    head = "## Withdrawn clause IDs {#withdrawn}\n"
    start = text.index(head) + len(head)
    end = text.find("\n## ", start)
    index.write_text(
        text[:start]
        + "\n- ZZZ-1 — withdrawn in 0.1.0: restated\n  ZZZ-2 over two lines.\n"
        + "- ZZZ-3 — withdrawn in 0.2.0: gone.\n"
        + (text[end:] if end >= 0 else ""),
        encoding="utf-8",
    )
    assert spec.withdrawn(folder) == (
        spec.Withdrawn("ZZZ-1", "0.1.0", "restated ZZZ-2 over two lines."),
        spec.Withdrawn("ZZZ-3", "0.2.0", "gone."),
    )
    assert spec.reserved(folder) == {"ZZZ-1", "ZZZ-3"}


def test_a_malformed_withdrawn_entry_is_refused(tmp_path):
    folder = spec_copy(tmp_path / "spec")
    index = folder / "index.md"
    text = index.read_text(encoding="utf-8")
    head = "## Withdrawn clause IDs {#withdrawn}\n"
    index.write_text(text.replace(head, head + "\n- ZZZ-1 was withdrawn\n"), encoding="utf-8")
    with pytest.raises(spec.SpecError, match="withdrawn entry not understood"):
        spec.withdrawn(folder)


@pytest.mark.parametrize(("clause", "old", "new", "message"), [
    pytest.param(FULL, "ATTACH-99", "RES-1", "RES-1 were withdrawn and are reserved",
                 id="a-reserved-id-cannot-be-reused"),
    pytest.param(FULL, "ATTACH-99", "ATTACH-3", "ATTACH-3 is defined twice",
                 id="a-clause-defined-twice"),
    pytest.param(FULL, "Since: 0.2.0", "Since: 9.0.0", "Since 9.0.0 is later than spec version",
                 id="a-clause-newer-than-the-spec"),
    pytest.param(REC, "[ATTACH-3]", "[ZZZ-7]", r"REC-9 is observed by unknown clauses \['ZZZ-7'\]",
                 id="a-rec-clause-observed-by-unknown-clauses"),
])
def test_a_clause_the_spec_cannot_hold_is_refused(tmp_path, clause, old, new, message):
    folder = spec_copy(tmp_path / "spec")
    append(folder, "resolution", clause.replace(old, new))
    with pytest.raises(spec.SpecError, match=message):
        spec.load(folder)


def test_rec_clauses_are_not_graded_clauses(tmp_path):
    folder = spec_copy(tmp_path / "spec")
    append(folder, "resolution", REC)
    assert "REC-9" not in spec.by_id(folder)
    assert spec.recommendation(folder)[-1].id == "REC-9"
