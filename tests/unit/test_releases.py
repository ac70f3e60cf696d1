"""Release pages ("Is my version affected?"), the home page's headlines and wall switch, and
the clause and cell pages' requirement titles, notable changes and clause picker."""

from __future__ import annotations

import json
import re

from bgmatrix import spec
from bgmatrix.site import cell_pages, cite, model, pages, releases, render
from tests.unit.test_report import PLAN, conflict, make_result, snapshot_of

FASTAPI = [c for c in PLAN["cells"] if c["kind"] == "fastapi"]


def cell_of(version: str) -> dict:
    return next(c for c in FASTAPI if c["fastapi"] == version)


def result_for(version: str, extra: dict[str, tuple[str, str]]) -> dict:
    cell = cell_of(version)
    return make_result(cell["id"], "fastapi", cell["fastapi"], cell["starlette"],
                       cell["python"], {**conflict("drop"), **extra})


def three_releases() -> model.Snapshot:
    """0.106.0 closes the yield resource early (LIFE-1 deviates), 0.105.0 and 0.118.0 do not."""
    found = {}
    for version, life in (("0.105.0", ("conforms", "open-during-tasks")),
                          ("0.106.0", ("deviates", "closed-before-tasks")),
                          ("0.118.0", ("conforms", "open-during-tasks"))):
        r = result_for(version, {"LIFE-1": life, "ATTACH-6": ("conforms", "ran")})
        found[r["cell"]["id"]] = r
    return snapshot_of(found)


def test_every_catalogue_entry_names_a_clause_a_topic_and_a_pattern():
    ids = {c.id for c in spec.load()}
    for hazard in releases.HAZARDS:
        assert hazard.clause in ids, hazard.clause
        assert hazard.topic in releases.TOPICS and hazard.pattern in releases.PATTERNS
        assert hazard.sentence.endswith(".") and hazard.sentence.count(".") >= 1
    for pattern in releases.PATTERNS.values():
        assert pattern.code.strip() and (pattern.checked_by is None or pattern.checked_by in ids)
    wanted = {"ATTACH-3", "SHAPE-2", "SHAPE-7", "SHAPE-9", "SHAPE-11", "ATTACH-16",
              "ATTACH-17", "LIFE-1", "LIFE-4", "ISO-1", "ATTACH-14", "ATTACH-13", "MW-1",
              "MW-3", "SHAPE-12"}
    assert wanted <= set(releases.HAZARD_BY_CLAUSE)


def test_a_hazard_shows_only_where_the_release_deviates_and_names_its_fix():
    snapshot = three_releases()
    before = {f.hazard.clause for f in releases.hazards_of(snapshot, "0.105.0")}
    during = {f.hazard.clause: f for f in releases.hazards_of(snapshot, "0.106.0")}
    assert "LIFE-1" not in before and "LIFE-1" in during
    assert {"ATTACH-3", "ATTACH-4"} <= before  # conflict("drop") deviates
    assert during["LIFE-1"].fixed_in == "0.118.0"
    assert during["LIFE-1"].labels == ("closed-before-tasks",)
    assert during["ATTACH-3"].fixed_in is None
    assert "ATTACH-6" not in during  # conforms: the safe pattern, not a hazard


def test_a_release_page_has_sentences_snippets_and_evidence_links():
    snapshot = three_releases()
    text = releases.release_page(snapshot, "0.106.0")
    assert text.startswith(render.LEAN + "# FastAPI 0.106.0\n")
    opening = text.removeprefix(render.LEAN).split("\n")[2]  # the searchable opening
    assert "yield dependencies (LIFE-1)" in opening
    assert "data-search-exclude" in text and "search:" not in text  # indexed, details not
    assert "is already closed" in text  # LIFE-1's consequence
    assert "background=background_tasks" in text  # the identity pattern's snippet
    assert 'href="../clauses/LIFE-1.html"' in text
    cell = cell_of("0.106.0")["id"]
    assert f'href="../cells/{cell}.html"' in text
    assert 'href="../releases/0.118.0.html"' in text  # the first release without LIFE-1
    assert "ran &#40;conforms&#41;" in text  # ATTACH-6 checks the identity pattern here
    assert "LIFE-1" not in releases.release_page(snapshot, "0.118.0").split("Not affected")[0]


def test_the_version_index_knows_measured_and_unmeasured_releases():
    snapshot = three_releases()
    data = releases.index_data(snapshot)
    assert data["releases"]["0.106.0"]["page"] == "releases/0.106.0.html"
    assert "LIFE-1" in data["releases"]["0.106.0"]["hazards"]
    assert data["releases"]["0.106.0"]["starlette"] == [cell_of("0.106.0")["starlette"]]
    assert "0.107.0" in data["unmeasured"] and "0.106.0" not in data["unmeasured"]
    box = str(releases.version_box(snapshot))
    assert 'id="bgm-version-data"' in box and '<option value="0.106.0">' in box
    embedded = re.search(r'id="bgm-version-data">(.*?)</script>', box).group(1)
    assert json.loads(embedded) == data


def test_home_answers_one_question_per_chapter_and_embeds_every_wall():
    snapshot = three_releases()
    chapters = {snapshot.clause_by_id[h.clause].chapter for h in pages.HEADLINES}
    assert chapters == set(spec.CHAPTERS)
    home = pages.home(snapshot)
    for chapter in spec.CHAPTERS:
        assert f"### [{chapter.capitalize()}](spec/{chapter}.md)" in home
    assert 'id="bgm-version"' in home and 'id="bgm-wall-clause"' in home
    data = pages.wall_data(snapshot)
    assert set(data["clauses"]) == {h.clause for h in pages.HEADLINES}
    life = data["clauses"]["LIFE-1"]
    tiles = dict(zip(data["versions"], life["tiles"]))
    assert tiles["0.106.0"][0] == "dev" and tiles["0.105.0"][0] == "ok"
    assert tiles["0.107.0"][0] == "none"
    assert life["labels"][tiles["0.106.0"][1]] == "closed-before-tasks (deviates)"
    assert data["clauses"]["ATTACH-3"]["tiles"][data["versions"].index("0.106.0")][0] == "drop"


def test_clause_titles_read_as_the_requirement_with_its_keyword():
    clauses = spec.by_id()
    assert (pages.requirement_heading(clauses["ATTACH-3"]) == "ATTACH-3 · MUST NOT lose "
            "injected tasks silently when the Response has its own background")
    assert pages.requirement(clauses["ATTACH-1"]) == (
        "MUST: Injected tasks run when FastAPI builds the response")
    negative = [c.id for c in clauses.values() if c.keyword.endswith("NOT")]
    assert set(negative) <= set(pages.NEGATIVE_TITLES), "a negative clause reads against its title"
    assert set(pages.NEGATIVE_TITLES) <= set(clauses)
    page = pages.clause_page(three_releases(), clauses["ATTACH-3"], [])
    assert page.startswith("# ATTACH-3 · MUST NOT lose injected tasks silently")


def test_spec_clause_headings_link_to_their_evidence():
    snapshot = three_releases()
    text = (spec.SPEC_DIR / "attachment.md").read_text(encoding="utf-8")
    out = pages.spec_chapter(snapshot, text)
    for clause in (c for c in snapshot.clauses if c.chapter == "attachment"):
        assert re.search(rf"^### \[{re.escape(clause.id)} — .+\]\(\.\./clauses/"
                         rf"{re.escape(clause.id)}\.md \"[^\"]+\"\) \{{#{clause.id}\}}$",
                         out, re.M), clause.id


def test_parametrised_tests_are_linked_not_reported_missing():
    r = result_for("0.106.0", {})
    r["tests"][0]["test"] = "test_attachment.py::test_conflict_with_background_task[json-1]"
    r["clauses"]["ATTACH-3"]["tests"] = [r["tests"][0]["test"]]
    snapshot = snapshot_of({r["cell"]["id"]: r})
    page = pages.clause_page(snapshot, snapshot.clause_by_id["ATTACH-3"], [])
    assert "no longer in the suite" not in page
    assert "../suite/test_attachment.md#test_conflict_with_background_task" in page


def test_fastapi_level_clauses_do_not_list_starlette_only_cells():
    fa = result_for("0.106.0", {})
    st_cell = next(c for c in PLAN["cells"] if c["kind"] == "starlette")
    st = make_result(st_cell["id"], "starlette", None, st_cell["starlette"], st_cell["python"],
                     {"ATTACH-3": ("n/a", "n/a"), "MW-1": ("conforms", "after-body")})
    for r in (fa, st):
        r["wire"] = {"state": "ok", "uvicorn": "0.30.0", "message": None,
                     "clauses": {cid: dict(e) for cid, e in r["clauses"].items()}}
    snapshot = snapshot_of({fa["cell"]["id"]: fa, st["cell"]["id"]: st})
    rows = "\n".join(pages.wire_rows(snapshot, snapshot.clause_by_id["ATTACH-3"], "../"))
    assert fa["cell"]["id"] in rows and st["cell"]["id"] not in rows


def test_a_cell_page_opens_with_what_is_notable_and_can_cite_any_clause():
    snapshot = three_releases()
    result = snapshot.results[cell_of("0.106.0")["id"]]
    text = cell_pages.cell_page(snapshot, result)
    notable = text[text.index("## What is notable"):text.index("bgm-cite-text")]
    assert 'href="../releases/0.106.0.html"' in notable
    assert "LIFE&#45;1" in notable and "unlike FastAPI 0.105.0 and 0.118.0" in notable
    assert "ATTACH&#45;1<" not in notable  # the same in the neighbours: not notable
    page = json.loads(re.search(r'id="bgm-cite-data">(.*?)</script>', text).group(1))
    shared = cell_pages.CiteData.of(snapshot)
    assert 'id="bgm-cite-clause"' in text and page["c"] == shared.cells[result["cell"]["id"]]
    # every clause the cell measured can be cited, in spec order, with its verdict
    measured = [c.id for c in snapshot.clauses if c.id in result["clauses"] and not (
        result["clauses"][c.id]["verdict"] == "n/a" and not result["clauses"][c.id]["tests"])]
    citable = [cid for cid, k in zip(shared.clauses, page["c"]) if k >= 0]
    assert citable == measured and len(measured) > 5 and "LIFE-1" in citable
    assert shared.clauses == [c.id for c in snapshot.clauses]
    default = cite.default_clause(snapshot, result)
    assert f'<option value="{default}" selected>' in text  # the page's own; js adds the rest
    # js/releases.js's citation: the shared first line, the page's start of the second line
    # and the clause's shared outcome text, the last line of the page's own citation
    cell_id = result["cell"]["id"]
    base = cite.cell_markdown(snapshot, default, cell_id).split("\n")
    for i, cid in enumerate(shared.clauses):
        if page["c"][i] < 0:
            continue
        verdict, outcome = shared.texts[i][page["c"][i]]
        assert verdict == result["clauses"][cid]["verdict"]
        written = "\n".join([shared.heads[i], page["p"] + outcome + " \\", base[2]])
        assert written == cite.cell_markdown(snapshot, cid, cell_id)
        assert shared.citation(snapshot, cell_id, cid) == written
    script = shared.script()
    assert script.startswith("/*") and "window.bgmCite = " in script and "<" not in script[2:]


def test_ranges_are_runs_of_consecutive_releases():
    order = ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"]
    assert releases._ranges(order, {"0.1.0", "0.2.0", "0.4.0"}) == [
        ("0.1.0", "0.2.0"), ("0.4.0", "0.4.0")]
    assert releases._ranges(order, set()) == []
    assert releases._ranges(order, set(order)) == [("0.1.0", "0.5.0")]
