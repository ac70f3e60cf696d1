"""The report: escaping, the model (ranges, flips, profiles, snapshot id), citations, exports,
the changes page, and whole builds: empty, invalid, hostile, full-size."""

from __future__ import annotations

import copy
import csv
import html
import io
import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from bgmatrix import cli, results, spec
from bgmatrix.site import build, changes, cite, exports, matrix, model
from bgmatrix.site.markup import clean, esc, json_for_script
from bgmatrix.snapshot import RUN_RECORD, content_hash, read_run, snapshot_id, snapshot_id_of

PLAN = json.loads(model.PLAN_PATH.read_text(encoding="utf-8"))
PLANNED = {c["id"]: c for c in PLAN["cells"]}  # a synthetic result agrees with its plan cell
CLAUSE_IDS = [c.id for c in spec.load()]
#: Test records named as the suite names them (the site links them to the suite's pages); other
#: clauses get a made-up test name, which the site shows as no longer in the suite.
SUITE_TESTS = {"ATTACH-3": "test_attachment.py::test_conflict_with_background_task"}

# ---------------------------------------------------------------------------------------------
# Synthetic results, valid against schema/result.schema.json (also used by test_browser.py)


def exchange(effects: list[str], warnings: list[dict] | None = None, body: str = "x") -> dict:
    events = [
        {"seq": 0, "kind": "send", "message": "http.response.start", "status": 200},
        {"seq": 1, "kind": "send", "message": "http.response.body", "body": body,
         "more_body": False, "size": len(body)},
    ]
    events += [{"seq": 2 + i, "kind": "effect", "name": e} for i, e in enumerate(effects)]
    events.append({"seq": 2 + len(effects), "kind": "app-returned"})
    return {"status": 200, "headers": [["content-type", "text/plain"]], "body": body,
            "effects": effects, "warnings": warnings or [], "app_exception": None,
            "events": events, "request": 0, "dropped_sends": 0}


def make_result(
    cell_id: str,
    kind: str = "fastapi",
    fastapi: str | None = "0.100.0",
    starlette: str | None = "0.27.0",
    python: str = "3.8",
    outcomes: dict[str, tuple[str, str]] | None = None,
    state: str = "ok",
    message: str | None = None,
    suite_hash: str = "0ec530fd363f",
    candidate: str | None = None,
) -> dict:
    """A result in full form (schema 2, as ``results.load`` returns it) whose clauses all say
    n/a except ``outcomes`` (clause -> (verdict, label)), each graded by one test with one
    exchange. Run facts (times, host) are not part of a result: see ``write_results``."""
    outcomes = outcomes or {}
    tests, verdicts = [], {}
    if state == "ok":
        for cid in CLAUSE_IDS:
            verdict, label = outcomes.get(cid, ("n/a", "n/a"))
            entry = {"verdict": verdict, "label": label, "tests": []}
            if cid in outcomes:
                test = SUITE_TESTS.get(
                    cid, f"test_{cid.lower().replace('-', '_')}.py::test_{cid.lower()}")
                entry["tests"] = [test]
                tests.append({
                    "test": test, "clauses": [cid], "outcome": "ok", "error": None,
                    "observations": {"request": exchange(["injected", "own"])},
                    "verdicts": {cid: {"verdict": verdict if verdict in model.MEASURED
                                       else "n/a", "label": label, "expected": "ran"}},
                })
            else:
                entry["reason"] = "no test of this clause ran in this cell"
            verdicts[cid] = entry
    tests.sort(key=lambda t: t["test"])  # as the runner orders them (``runner.result_for``)
    return {
        "schema_version": results.SCHEMA_VERSION,
        "cell": {"id": cell_id, "kind": kind, "fastapi": fastapi, "starlette": starlette,
                 "python": python, "cutoff": PLANNED.get(cell_id, {}).get(
                     "cutoff", "2024-01-01T00:00:00Z"),
                 "in_declared_range": True if kind == "fastapi" else None,
                 "candidate": candidate},
        "state": state,
        "message": message,
        "provenance": {
            "python": f"{python}.18", "implementation": "CPython",
            "fastapi": fastapi, "starlette": starlette,
            "packages": {"fastapi": fastapi or "-", "starlette": starlette or "-"},
            "suite_tools": ["pytest==8.3.5"], "spec_version": spec.spec_version(),
            "suite_hash": suite_hash, "tools": {"pytest": "8.3.5"},
        },
        "clauses": verdicts,
        "tests": tests,
    }


def conflict(label: str) -> dict[str, tuple[str, str]]:
    """The conflict clauses and a few ordinary ones, for one conflict behaviour."""
    verdict = "deviates" if label in ("drop", "lost-all") else "conforms"
    return {
        "ATTACH-1": ("conforms", "ran"),
        "ATTACH-3": (verdict, label),
        "ATTACH-4": (verdict, label),
        "ATTACH-8": (verdict, f"data:ran conflict:{label}"),
        "RES-1": (verdict, label),
    }


def behaviour_of(version: str) -> str:
    """The synthetic history: drop, then warn, a flip back to drop, then merge."""
    key = model.version_key(version)
    if key < model.version_key("0.120.0"):
        return "drop"
    if version == "0.125.0":
        return "drop"
    if key < model.version_key("0.140.0"):
        return "warn"
    return "merge"


def synthetic_results(
    limit: int | None = None, fail_every: int = 0, stride: int = 1, include: tuple = ()
) -> dict[str, dict]:
    """One result per planned cell (every ``stride``-th, the first ``limit``, plus the cells of
    the FastAPI releases in ``include``), following ``behaviour_of``."""
    out = {}
    chosen = PLAN["cells"][::stride][:limit]
    chosen += [c for c in PLAN["cells"] if c["fastapi"] in include and c not in chosen]
    for n, cell in enumerate(chosen):
        if cell["kind"] == "fastapi":
            outcomes = conflict(behaviour_of(cell["fastapi"]))
        else:
            outcomes = {"EXEC-1": ("conforms", "after-body")}
        state = "install-error" if fail_every and n % fail_every == fail_every - 1 else "ok"
        out[cell["id"]] = make_result(
            cell["id"], cell["kind"], cell["fastapi"], cell["starlette"], cell["python"],
            outcomes, state=state, message="resolver said no" if state != "ok" else None,
        )
    return out


#: The run record's date in synthetic folders: snapshot ids read ``<RUN_DATE>-<7 hex>``.
RUN_DATE = "2026-01-02"


def write_results(folder: Path, found: dict[str, dict], run: bool = True) -> Path:
    """Each result in its stored form (evidence in ``folder/evidence``), and, unless ``run`` is
    false, a run record dated :data:`RUN_DATE` for exactly this content."""
    folder.mkdir(parents=True, exist_ok=True)
    for cid, data in found.items():
        results.write(folder / f"{cid}.json", data)
    if run:
        record = {
            "schema_version": 1, "content": content_hash(results.load_all(folder)[0]),
            "date": RUN_DATE, "started": f"{RUN_DATE}T03:04:05Z",
            "finished": f"{RUN_DATE}T03:05:05Z", "cells_run": len(found),
            "host": {"bgmatrix": "0.1.0", "platform": "Linux x86_64",
                     "python": "CPython 3.12.3", "uv": "0.13.9"},
        }
        (folder / RUN_RECORD).write_text(json.dumps(record), encoding="utf-8")
        assert read_run(folder) == record  # valid against schema/run.schema.json
    return folder


def snapshot_of(found: dict[str, dict]) -> model.Snapshot:
    return model.Snapshot(spec.load(), found, PLAN, spec.spec_version())


def page(path: Path) -> str:
    """A built page with character references resolved, as a reader's browser sees the text."""
    return html.unescape(path.read_text(encoding="utf-8"))


def build_site(tmp_path: Path, results_dir: Path, *extra: str) -> tuple[int, Path]:
    site = tmp_path / "site"
    (tmp_path / "none").mkdir(exist_ok=True)  # an empty previous snapshot: no git involved
    if "--plan" not in extra:  # synthetic release cells the plan lacks join its cells
        cells = {c["id"]: c for c in PLAN["cells"]}
        for path in results_dir.glob("*.json") if results_dir.is_dir() else ():
            try:
                cell = json.loads(path.read_text(encoding="utf-8"))["cell"]
                if cell["kind"] != "candidate" and cell["id"] not in cells:  # as planned
                    cells[cell["id"]] = dict(cell, starlette_bound=None, tags=[])
                    del cells[cell["id"]]["candidate"]
            except (ValueError, KeyError, TypeError):
                pass  # an invalid file (or the run record): the report itself must name it
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps(dict(PLAN, cells=list(cells.values()))), encoding="utf-8")
        extra = ("--plan", str(plan), *extra)
    code = cli.main(["report", "--results", str(results_dir), "--out", str(tmp_path / "gen"),
                        "--site-dir", str(site), "--previous", str(tmp_path / "none"), *extra])
    return code, site


@pytest.fixture(autouse=True)
def own_work_dir(tmp_path, monkeypatch):
    """The report remembers validated files under the work folder: keep the tests' apart."""
    monkeypatch.setattr("bgmatrix.paths.WORK_DIR", tmp_path / "work")


# ---------------------------------------------------------------------------------------------
# Escaping


def test_esc_leaves_nothing_for_html_or_markdown_to_interpret():
    out = esc('<script>alert(1)</script> | **b** [l](javascript:x) {: #id } `c` \\ _u_ # h\nx')
    assert not re.search(r"[<>|*\[\]{}`\\_#\n&]", re.sub(r"&#\d+;", "", out))
    assert "&#60;script&#62;" in out and "&#10;" in out


def test_esc_replaces_lone_surrogates_and_controls_and_truncates():
    out = esc("a\ud800b\x00c\x1b[31m\u202ed")
    assert out.encode("utf-8")  # would raise on a lone surrogate
    assert "\ufffd" in out and "\x00" not in out and "\u202e" not in out
    long = esc("A" * 1_000_000)
    assert len(long) < 3000 and "more characters in the raw result" in long


def test_esc_in_a_raw_block_escapes_html_only():
    out = esc("<b>**x**</b> & _y_\nnext", context="block")
    assert out == "&#60;b&#62;**x**&#60;/b&#62; &#38; _y_\nnext"
    assert esc('"quoted" <x>', context="attr") == "&#34;quoted&#34; &#60;x&#62;"


def test_json_for_script_cannot_close_its_element():
    text = json_for_script({"label": "</script><script>alert(1)</script><!--"})
    assert "<" not in text and ">" not in text
    assert json.loads(text)["label"].startswith("</script>")


# ---------------------------------------------------------------------------------------------
# The model


def test_timeline_folds_consecutive_releases_and_flags_flips():
    found = {}
    # consecutive in the plan, except that 0.101.1 is not measured
    for v, label in [("0.100.0", "drop"), ("0.100.1", "drop"), ("0.101.0", "warn"),
                     ("0.102.0", "warn"), ("0.103.0", "drop"), ("0.104.0", "merge")]:
        cid = f"fa-{v}_st-0.27.0_py3.8"
        found[cid] = make_result(cid, fastapi=v, outcomes=conflict(label))
    timeline = snapshot_of(found).timeline("ATTACH-3")
    assert [(r.first, r.last, r.outcomes[0][1]) for r in timeline.runs] == [
        ("0.100.0", "0.100.1", "drop"), ("0.101.0", "0.102.0", "warn"),
        ("0.103.0", "0.103.0", "drop"), ("0.104.0", "0.104.0", "merge")]
    before, after = timeline.first_change
    assert (before.first, after.first) == ("0.100.0", "0.101.0")
    assert [v for v, _ in timeline.flips] == ["0.103.0"]
    assert [r.span for r in timeline.runs[:2]] == [2, 3]  # 0.101.1 lies in the second


def test_a_failed_cell_is_a_gap_not_a_change():
    found = {}
    for v, state in [("0.100.0", "ok"), ("0.101.0", "install-error"), ("0.102.0", "ok")]:
        cid = f"fa-{v}_st-0.27.0_py3.8"
        found[cid] = make_result(cid, fastapi=v, outcomes=conflict("drop"), state=state)
    timeline = snapshot_of(found).timeline("ATTACH-3")
    assert len(timeline.runs) == 1 and not timeline.flips and timeline.first_change is None
    assert timeline.runs[0].gaps == ("0.101.0",) and timeline.runs[0].measured_count == 2
    # between two different behaviours a gap cannot be placed: it stands alone
    found["fa-0.102.0_st-0.27.0_py3.8"] = make_result(
        "fa-0.102.0_st-0.27.0_py3.8", fastapi="0.102.0", outcomes=conflict("warn"))
    runs = snapshot_of(found).timeline("ATTACH-3").runs
    assert [(r.first, r.measured) for r in runs] == [
        ("0.100.0", True), ("0.101.0", False), ("0.102.0", True)]


def test_profiles_follow_the_resolution_chapter():
    def prof(*labels: str) -> str:
        return model.profile([make_result(f"c{i}", outcomes=conflict(lb))
                              for i, lb in enumerate(labels)])

    assert prof("drop") == "drop"
    assert prof("warn+merge-reordered") == "merge"
    assert prof("drop", "warn") == "mixed"
    assert prof("duplicate") == "duplicate"
    assert model.profile([make_result("x", state="timeout")]) == "unmeasured"


def test_snapshot_id_names_the_content(tmp_path):
    found = synthetic_results(limit=3)
    run = {"date": RUN_DATE}
    first = snapshot_id_of(found, run)
    assert re.fullmatch(r"2026-01-02-[0-9a-f]{7}", first)
    assert snapshot_id_of(dict(reversed(list(found.items()))), run) == first
    changed = copy.deepcopy(found)
    next(iter(changed.values()))["clauses"]["ATTACH-3"]["label"] = "warn"
    assert snapshot_id_of(changed, run) != first
    # Without a run record the id is undated; its hash still names the content.
    assert re.fullmatch(r"undated-[0-9a-f]{7}", snapshot_id_of(found))
    assert snapshot_id_of(found).split("-")[-1] == first.split("-")[-1]
    assert snapshot_id_of({}).startswith("undated-")
    # Read from a folder: the stored form with its evidence and run record names the same
    # content as the results in memory; the folder's formatting and layout do not enter it.
    assert snapshot_id(write_results(tmp_path / "dated", found)) == first
    assert snapshot_id(write_results(tmp_path / "undated", found, run=False)) == \
        snapshot_id_of(found)


def test_a_cached_snapshot_id_is_the_computed_one_and_a_changed_file_changes_it(
        tmp_path, monkeypatch):
    """The report looks the content hash up by its files' digests (.bgmatrix/report/): the id
    it finds is the one computed from the full results, on a miss and on a hit alike, and a
    result file whose bytes change gives a new, correct id."""
    from bgmatrix import snapshot

    found = synthetic_results(limit=4)
    folder = write_results(tmp_path / "results", found)
    computed = []
    real = snapshot._content_hash
    monkeypatch.setattr(snapshot, "_content_hash",
                        lambda f: computed.append(len(f)) or real(f))
    first = model.load_snapshot(folder).id  # a miss: computed, then remembered
    assert first == snapshot_id_of(found, read_run(folder)) == snapshot_id(folder)
    assert computed and (tmp_path / "work" / "report" / "content-hashes.json").is_file()
    computed.clear()
    again = model.load_snapshot(folder)
    assert again.stored and again.id == first and computed == []  # a hit: nothing hashed
    # An uncached id of the same results agrees (no digests: computed from the content).
    assert snapshot.content_hash(again.results) == snapshot.content_hash(
        again.results, again.stored)
    cid = sorted(found)[0]
    edited = copy.deepcopy(found[cid])
    edited["clauses"]["ATTACH-3"]["label"] = "relabelled"
    results.write(folder / f"{cid}.json", edited)
    changed = model.load_snapshot(folder)
    assert changed.id != first and computed  # a miss again
    assert changed.id == snapshot_id_of({**found, cid: edited}, read_run(folder))
    # A cache file that cannot be read costs the hash, nothing else.
    (tmp_path / "work" / "report" / "content-hashes.json").write_text("{not json")
    assert model.load_snapshot(folder).id == changed.id


def test_canonical_json_is_json_dumps_text():
    """The snapshot hash encodes shared evidence once (snapshot.canonical_json): the text is
    json.dumps's, for results whose records share objects and for anything else."""
    from bgmatrix import snapshot

    def dumps(value):
        return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))

    shared = {"events": [{"seq": 1, "kind": "send", "x": 1.5}], "é": "ü\ud800", "n": None}
    records = [{"test": f"t{i}", "clauses": ["ATTACH-3"], "error": None, "outcome": "ok",
                "verdicts": {"ATTACH-3": {"verdict": "deviates"}},
                "observations": {"request": shared, "b": [shared, i]}} for i in range(3)]
    result = {"cell": {"id": "c"}, "tests": records, "clauses": {}, "state": "ok",
              "wire": {"clauses": {"ATTACH-3": {"evidence": shared, "label": "drop"}}},
              "zz": [(1, 2), {"k": float("inf")}]}
    memo: dict[int, str] = {}
    for value in (result, result, records, shared, {2: "a", 1: "b"}, {}, [], "x", 3,
                  {"tests": "not a list", "wire": None}, {"tests": [{"observations": [1]}]}):
        assert snapshot.canonical_json(value, memo) == dumps(value)
        assert snapshot.canonical_json(value) == dumps(value)
    found = synthetic_results(limit=5)
    assert snapshot._content_hash(found) == content_hash(copy.deepcopy(found))


def test_matrix_words_read_without_a_legend():
    word = matrix.short_word
    assert word("deviates", "drop") == "drop"
    assert word("deviates", "param:drop decorator:drop router:n/a yield:drop") == "drop"
    assert word("deviates", "1:isolated 2:carried 3:carried") == "carried/isolated"
    assert word("deviates", "same (data:ran response:ran bg-task:drop)") == "same"
    assert word("install-error", "") == "install error"
    assert word("missing", "") == "not measured"
    assert len(word("conforms", "x:" + "a" * 50 + " y:b")) <= matrix.WORD_LIMIT
    # Two labels of one clause never read the same: the rarer gets a subscript.
    outs = [("deviates", "drop"), ("deviates", "data:ran conflict:drop"), ("conforms", "ran"),
            ("n/a", "n/a"), ("install-error", "")]
    words = matrix.outcome_words(outs, [set(outs)])
    assert words[("deviates", "drop")] == "drop"
    assert words[("deviates", "data:ran conflict:drop")] == "drop₂"
    assert len({words[o] for o in outs}) == len(outs)
    # ... but the same word in different clauses stays plain.
    apart = matrix.outcome_words(outs, [{outs[0]}, {outs[1]}])
    assert apart[outs[1]] == "drop"


# ---------------------------------------------------------------------------------------------
# Citations


def test_cite_prints_clause_behaviour_range_snapshot_and_permalinks(tmp_path, cite_out):
    folder = write_results(tmp_path / "results", synthetic_results(limit=12))
    text = cite_out(folder)
    snapshot = model.load_snapshot(folder)
    assert "ATTACH-3" in text and "MUST NOT" in text and "`drop` (deviates)" in text
    assert "FastAPI 0.10.0 – " in text and snapshot.id in text
    assert f"{cite.base_url()}clauses/ATTACH-3.html" in text
    assert text == cite.clause_markdown(snapshot, "ATTACH-3") + "\n"
    cell = next(iter(snapshot.results))
    text = cite_out(folder, cell=cell)
    assert f"{cite.base_url()}results/{cell}.json" in text
    assert f"{cite.base_url()}cells/{cell}.html" in text


def test_cite_rejects_an_unknown_clause_or_cell_in_one_line(tmp_path, capsys):
    folder = write_results(tmp_path / "results", synthetic_results(limit=2))
    assert cli.main(["cite", "NOPE-9", "--results", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NOPE-9" in err
    assert cli.main(["cite", "ATTACH-3", "--cell", "fa-9.9.9", "--results", str(folder)]) == 2
    assert "fa-9.9.9" in capsys.readouterr().err


def test_the_base_url_has_one_source():
    """The environment (cite.SITE_URL_ENV), never a URL written into the config or code."""
    config = build.CONFIG.read_text(encoding="utf-8")
    assert f"site_url: !ENV [{cite.SITE_URL_ENV}, \"\"]" in config
    for path in Path(build.__file__).parent.glob("*.py"):
        assert "bgmatrix.example" not in path.read_text(encoding="utf-8"), path


def test_the_nav_lists_every_spec_chapter():
    config = build.CONFIG.read_text(encoding="utf-8")
    for chapter in ("index", *spec.CHAPTERS):
        assert f"- spec/{chapter}.md" in config


# ---------------------------------------------------------------------------------------------
# Exports and changes


def test_exports_match_their_schema_and_each_other():
    snapshot = snapshot_of(synthetic_results(limit=20, fail_every=7))
    export = exports.matrix_json(snapshot)
    schema = json.loads(exports.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(export)
    rows = list(csv.DictReader(io.StringIO(exports.matrix_csv(export))))
    ok = [c for c in export["cells"] if c["state"] == "ok"]
    failed = [c for c in export["cells"] if c["state"] != "ok"]
    assert failed and len(rows) == len(ok) * len(CLAUSE_IDS) + len(failed)
    assert {r["clause"] for r in rows} >= {"ATTACH-3", ""}


def test_csv_neutralises_formulas():
    found = {"c": make_result("c", outcomes={"ATTACH-3": ("deviates", "=HYPERLINK(1)")})}
    text = exports.matrix_csv(exports.matrix_json(snapshot_of(found)))
    assert "'=HYPERLINK(1)" in text


def test_changes_lists_new_cells_changed_verdicts_and_suite(tmp_path):
    before = synthetic_results(limit=4)
    after = copy.deepcopy(before)
    first, second, third, fourth = list(after)
    after[first]["clauses"]["ATTACH-3"] = {"verdict": "conforms", "label": "warn", "tests": []}
    after[second]["provenance"]["suite_hash"] = "feedbeef"
    after[third] = make_result(third, state="timeout", message="slow")
    del before[fourth]
    previous = changes.from_folder(write_results(tmp_path / "before", before))
    diff = changes.compare(previous, snapshot_of(after))
    assert diff.new == [fourth]
    assert [(c, k) for c, k, _, _ in diff.verdicts] == [(first, "ATTACH-3")]
    assert [c for c, _, _ in diff.suite] == [second]
    assert diff.states == [(third, "ok", "timeout")]


def test_changes_read_the_committed_results_through_git(tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    write_results(repo / "results", synthetic_results(limit=2))
    for args in (["init", "-q"], ["add", "results"],
                 ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "r"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    previous = changes.from_git(repo=repo)
    assert previous is not None and set(previous.results) == set(synthetic_results(limit=2))
    assert changes.from_git(repo=tmp_path / "nowhere") is None


# ---------------------------------------------------------------------------------------------
# Whole builds


def test_an_empty_results_folder_builds_and_says_so(tmp_path):
    (tmp_path / "results").mkdir()
    code, site = build_site(tmp_path, tmp_path / "results")
    assert code == 0
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "No results yet" in home
    assert (site / "matrix.html").is_file() and (site / "clauses" / "ATTACH-3.html").is_file()


def test_a_file_validates_again_whenever_its_bytes_change(tmp_path, monkeypatch):
    folder = write_results(tmp_path / "results", synthetic_results(limit=2))
    calls = []
    real_load = results.load
    monkeypatch.setattr(results, "load",
                        lambda p, *a, **k: calls.append(p.name) or real_load(p, *a, **k))
    assert len(model.load_results(folder)[0]) == 2 and len(calls) == 2
    assert len(model.load_results(folder)[0]) == 2 and len(calls) == 2  # remembered
    name = sorted(folder.glob("*.json"))[0]
    data = json.loads(name.read_text())
    data["state"] = "not-a-state"
    name.write_text(json.dumps(data))
    found, errors = model.load_results(folder)
    assert len(found) == 1 and len(errors) == 1 and "not-a-state" in errors[0]
    assert model.load_results(folder, use_cache=False)[1] == errors


def test_evidence_validates_once_per_schema_and_an_edited_object_is_still_caught(
        tmp_path, monkeypatch):
    """The record of validated files also keeps the evidence objects that passed, by hash
    and kind: a second read validates none; an object whose content no longer matches its
    name is refused all the same (every read checks it), and the cache never hides it."""
    from bgmatrix import evidence

    folder = write_results(tmp_path / "results", synthetic_results(limit=3))
    checked = []
    real = evidence.validate
    monkeypatch.setattr(evidence, "validate",
                        lambda obj, kind, where: checked.append(kind) or real(obj, kind, where))
    assert len(model.load_results(folder)[0]) == 3 and checked
    checked.clear()
    assert len(model.load_results(folder)[0]) == 3 and checked == []  # remembered
    pack = next(p for p in (folder / "evidence").glob("*.jsonl") if p.read_text().strip())
    line = json.loads(pack.read_text().splitlines()[0])
    line["object"] = {"edited": True}
    rest = pack.read_text().splitlines()[1:]
    pack.write_text("\n".join([json.dumps(line), *rest]) + "\n")
    found, errors = model.load_results(folder)
    assert errors and all(str(pack) in e or "evidence" in e for e in errors)
    assert len(found) < 3


def test_an_invalid_result_stops_the_report_and_keeps_the_old_site(tmp_path, capsys):
    folder = write_results(tmp_path / "results", synthetic_results(limit=3))
    assert build_site(tmp_path, folder)[0] == 0
    before = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    (folder / "fa-0.10.1_st-0.11.1_py3.8.json").write_text('{"schema_version": 2, "cell"',
                                                          encoding="utf-8")
    (folder / "broken-utf8.json").write_bytes(b'{"x": "\xff\xfe"}')
    capsys.readouterr()
    code, site = build_site(tmp_path, folder)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 2
    assert "fa-0.10.1_st-0.11.1_py3.8.json" in err[1] and "not valid JSON" in err[1]
    assert "broken-utf8.json" in err[0] and "cannot be read" in err[0]
    assert (site / "index.html").read_text(encoding="utf-8") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_full_build_has_every_page_and_its_data(tmp_path):
    found = synthetic_results(stride=16, fail_every=9, include=("0.124.0", "0.125.0"))
    found["cand-merge_py3.11"] = make_result(
        "cand-merge_py3.11", "candidate", "0.165.0", "1.10.0", "3.11",
        conflict("merge"), candidate="merge-without-mutation")
    folder = write_results(tmp_path / "results", found)
    code, site = build_site(tmp_path, folder)
    assert code == 0
    for cid in found:
        assert (site / "cells" / f"{cid}.html").is_file()
    assert not (site / "results").exists()  # raw results are linked, not copied in
    for cid in CLAUSE_IDS:
        assert (site / "clauses" / f"{cid}.html").is_file()
    home = page(site / "index.html")
    assert "dropped without a warning" in home and "bgm-tile b-drop" in home
    clause = page(site / "clauses" / "ATTACH-3.html")
    assert "bgm-cite-text" in clause and "Timeline across FastAPI releases" in clause
    # The test from the results' own records, linked to its anchor on the suite's page.
    assert 'href="../suite/test_attachment.html#test_conflict_with_background_task"' in clause
    assert "no longer in the suite" not in clause
    suite_page = page(site / "suite" / "test_attachment.html")
    assert 'id="test_conflict_with_background_task"' in suite_page
    assert "*Releases.*" not in clause and "<em>Releases.</em>" in clause  # generated at build
    spec_page = page(site / "spec" / "attachment.html")
    # One per clause of the chapter.
    assert spec_page.count("<em>Releases.</em>") == sum(
        c.chapter == "attachment" for c in spec.load())
    assert "flips back" in clause  # 0.125.0 returns to drop
    decision = page(site / "decision.html")
    assert "merge-without-mutation" in decision and "today: drop" in decision
    matrix = (site / "matrix.html").read_text(encoding="utf-8")
    data = re.search(r'id="bgm-matrix-data">(.*?)</script>', matrix, re.S).group(1)
    data = json.loads(data)
    assert len(data["cells"]) == len(found)
    # One FastAPI section (Starlette is a column and a filter, not a section per line).
    assert [s[0] for s in data["sections"]][:1] == ["fastapi"] and "candidates" in \
        [s[0] for s in data["sections"]]
    spec_page = page(site / "spec" / "attachment.html")
    assert 'id="ATTACH-3"' in spec_page and "Not yet measured" not in spec_page


# ---------------------------------------------------------------------------------------------
# Hostile evidence

HOSTILE = [
    "<script>alert('x1')</script>",
    '<img src=x onerror="alert(\'x2\')">',
    '"><svg onload=alert(\'x3\')>',
    "| a | b |\n|---|---|\n| x1 | y1 |",
    "[click](javascript:alert('x4'))",
    '{: onclick="alert(\'x5\')" }',
    "**bold-x6** `code` _em_ <!--",
    "</pre></div></td></table><script>alert('x7')</script>",
    "&lt;script&gt;alert('x8')&lt;/script&gt;",
    "\x00\x1b[31m\u202etxt \ud800\udfff lone",
]


class _Audit(HTMLParser):
    """Collects what would run: script elements, event-handler attributes, javascript: URLs,
    and the text a reader sees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict, str]] = []
        self.handlers: list[str] = []
        self.js_urls: list[str] = []
        self.text: list[str] = []
        self._script: dict | None = None

    def handle_starttag(self, name, attrs):
        attrs_d = dict(attrs)
        for key, value in attrs:
            if key.startswith("on"):
                self.handlers.append(f"{name} {key}")
            if key in ("href", "src", "action") and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.js_urls.append(value)
        if name == "script":
            self._script = attrs_d
            self.scripts.append((attrs_d, ""))

    def handle_endtag(self, name):
        if name == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


def hostile_result() -> dict:
    evil = "\n".join(HOSTILE)
    cid = "fa-0.106.0_st-0.27.0_py3.8"
    result = make_result(cid, fastapi="0.106.0", outcomes=conflict("drop"))
    result["clauses"]["ATTACH-3"]["label"] = HOSTILE[0]
    result["clauses"]["ATTACH-4"]["label"] = HOSTILE[3]
    result["clauses"]["ATTACH-4"]["reason"] = evil
    result["clauses"]["ATTACH-3"]["tests"].append(HOSTILE[7])
    test = result["tests"][0]
    test["error"] = evil + "A" * 1_000_000
    test["test"] = HOSTILE[1]
    test["verdicts"]["ATTACH-1"]["expected"] = evil
    ex = test["observations"]["request"]
    ex["warnings"] = [{"category": HOSTILE[2], "message": m, "user_warning": True}
                      for m in HOSTILE]
    ex["app_exception"] = "Traceback:\n" + evil + "\n" + "B" * 1_000_000
    ex["body"] = evil
    ex["headers"].append([HOSTILE[4], HOSTILE[5]])
    ex["events"].append({"seq": 99, "kind": HOSTILE[6], "detail": evil})
    test["observations"][HOSTILE[8]] = {"data": evil, "more": ["C" * 1_000_000]}
    result["message"] = evil
    result["provenance"]["packages"] = {HOSTILE[0]: HOSTILE[1], "pkg|x": "1.0\n| t |"}
    result["provenance"]["implementation"] = evil
    result["provenance"]["tools"]["evil"] = HOSTILE[7]
    return result


def test_hostile_evidence_is_shown_as_text_and_never_runs(tmp_path):
    found = {"fa-0.106.0_st-0.27.0_py3.8": hostile_result()}
    cand = make_result("cand-x_py3.11", "candidate", "0.165.0", "1.10.0", "3.11",
                       conflict("merge"), candidate=HOSTILE[0] + HOSTILE[9])
    found["cand-x_py3.11"] = cand
    # The result schema does not constrain version strings either. A release cell must match
    # its plan cell, whose id is made of its versions, so such a version can only come in
    # with a candidate (built outside the plan).
    evil_version = "0.107.0<script>alert('x9')</script>|*x*"
    found["cand-evil_py3.8"] = make_result(
        "cand-evil_py3.8", "candidate", fastapi=evil_version, starlette=evil_version,
        outcomes=conflict("drop"), candidate="evil-versions")
    folder = write_results(tmp_path / "results", found)
    code, site = build_site(tmp_path, folder)
    assert code == 0
    pages = sorted(site.rglob("*.html"))
    # The theme's own inline scripts, as on its 404 page (which carries no data of ours):
    # every other inline script on any page must be one of these.
    theme = _Audit()
    theme.feed((site / "404.html").read_text(encoding="utf-8"))
    def same_on_every_page(body: str) -> str:  # the theme's scripts differ only by base URL
        return re.sub(r'new URL\("[./]*",location\)', "new URL(BASE,location)", body)

    theme_scripts = {same_on_every_page(body) for attrs, body in theme.scripts
                     if "src" not in attrs and attrs.get("type") != "application/json"}
    seen_text = []
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert page.stat().st_size < build.PAGE_LIMIT, page
        # A literal "<" before the payload would make it markup; as text it is harmless.
        for marker in ("<script>alert", "<img src=x", "<svg onload", "<strong>bold-x6"):
            assert marker not in html, (page, marker)
        audit = _Audit()
        audit.feed(html)
        assert not audit.handlers, (page, audit.handlers)
        assert not audit.js_urls, (page, audit.js_urls)
        for attrs, body in audit.scripts:
            if attrs.get("type") == "application/json":  # data: must parse as JSON, whole
                assert attrs.get("id") in ("__config", "bgm-matrix-data", "bgm-cite-data",
                                              "bgm-version-data", "bgm-wall-data"), (page, attrs)
                json.loads(body)
                continue
            assert "alert" not in body, page
            if "src" in attrs:
                assert not attrs["src"].startswith(("http:", "https:", "//")), page
            else:
                assert same_on_every_page(body) in theme_scripts, (page, body[:200])
        seen_text.append("".join(audit.text))
    text = "\n".join(seen_text)
    # Shown as text, whole where short, truncated where long, tables not split apart.
    assert "<script>alert('x1')</script>" in text
    assert "| a | b |" in text and "[click](javascript:alert('x4'))" in text
    assert "&lt;script&gt;alert('x8')" in text
    assert "more characters in the raw result" in text
    cell = (site / "cells" / "fa-0.106.0_st-0.27.0_py3.8.html").read_text(encoding="utf-8")
    assert "\ufffd" in cell and "A" * 5000 not in cell
    # The raw result, as committed with the evidence it names (linked from the page, not
    # copied into the site), keeps every character.
    assert not (site / "results").exists()
    raw = results.load(folder / "fa-0.106.0_st-0.27.0_py3.8.json")
    assert raw["tests"][0]["error"].endswith("A" * 1_000_000)


def test_hostile_labels_reach_the_matrix_data_inertly():
    snapshot = snapshot_of({"fa-0.106.0_st-0.27.0_py3.8": hostile_result()})
    data = matrix.matrix_data(snapshot)
    labels = [o[1] for o in data["outcomes"]]
    assert HOSTILE[0] in labels
    assert "<" not in json_for_script(data)
    legend = matrix.legend_html(data)
    assert "<script>" not in legend and clean(HOSTILE[0]) not in legend


# ---------------------------------------------------------------------------------------------
# Size and speed on a full matrix (opt in: BGMATRIX_PERF=1, it builds ~700 pages)


def full_size_results() -> dict[str, dict]:
    """A result per planned cell, shaped like real ones: a committed FastAPI result (dozens
    of tests, real event logs) cloned into every cell when there is one, else synthetic."""
    real = [results.load(p) for p in sorted(results.RESULTS_DIR.glob("fa-*.json"))[-1:]]
    real = [r for r in real if r["state"] == "ok"]
    if not real:
        return synthetic_results(fail_every=25)
    found = {}
    for cell in PLAN["cells"]:
        data = copy.deepcopy(real[0])
        data["cell"] = {k: cell[k] for k in ("id", "kind", "fastapi", "starlette", "python",
                                             "cutoff", "in_declared_range")}
        data["cell"]["candidate"] = None
        if cell["fastapi"] and behaviour_of(cell["fastapi"]) != "drop":
            data["clauses"]["ATTACH-3"].update(verdict="conforms", label="warn")
        found[cell["id"]] = data
    return found


@pytest.mark.skipif(not os.environ.get("BGMATRIX_PERF"),
                    reason="full-size build; set BGMATRIX_PERF=1 to run it")
def test_a_full_matrix_builds_with_no_page_over_the_limit(tmp_path):
    """Size only: its time is printed, never asserted (speed is measured by the report's
    own timing split and the benchmark, not by a unit test)."""
    found = full_size_results()
    for i in range(700 - len(found)):
        cid = f"cand-{i}_py3.11"
        found[cid] = make_result(cid, "candidate", "0.165.0", "1.10.0", "3.11",
                                 conflict("merge"), candidate=f"variant-{i}")
    folder = write_results(tmp_path / "results", found)
    started, cpu = time.perf_counter(), time.process_time()
    code, site = build_site(tmp_path, folder)  # first run: every file is validated
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert code == 0
    largest = max(p.stat().st_size for p in site.rglob("*.html"))
    print(f"{len(found)} results: {elapsed:.1f} s wall, {cpu:.1f} s CPU, "
          f"load {os.getloadavg()[0]:.1f}, largest page {largest / 1024:.0f} KB")
    assert largest < build.PAGE_LIMIT


def test_wire_evidence_kept_from_an_older_method_is_shown_as_stale(tmp_path):
    found = synthetic_results(limit=2)
    cid = next(c for c, r in found.items() if r["cell"]["kind"] == "fastapi")
    wire = {"state": "ok", "message": None, "uvicorn": "0.30.0", "wire_hash": "old",
            "stale": "measured with wire method old; the method is now new",
            "clauses": {"ATTACH-3": {"verdict": "deviates", "label": "drop",
                                     "evidence": {"effects": ["own"]}}}}
    found[cid] = dict(found[cid], wire=wire)
    code, _ = build_site(tmp_path, write_results(tmp_path / "results", found), "--no-build")
    assert code == 0
    cell_page = page(tmp_path / "gen" / "cells" / f"{cid}.md")
    assert "Stale: measured with wire method old; the method is now new" in cell_page
    assert "stale: the wire method changed since" in page(tmp_path / "gen" / "clauses" /
                                                          "ATTACH-3.md")


def test_every_server_of_a_cell_is_shown_beside_the_raw_verdict(tmp_path):
    from tests.unit.test_results import servers_section, wire_section

    found = synthetic_results(limit=2)
    cid = next(c for c, r in found.items() if r["cell"]["kind"] == "fastapi")
    found[cid] = dict(found[cid], wire=wire_section("w"), servers=servers_section("w"))
    code, _ = build_site(tmp_path, write_results(tmp_path / "results", found), "--no-build")
    assert code == 0
    cell_page = page(tmp_path / "gen" / "cells" / f"{cid}.md")
    assert "uvicorn 0.30.0 on 127.0.0.1" in cell_page and "hypercorn 0.18.0" in cell_page
    assert "granian ? on 127.0.0.1 with an httpx client: wire-unavailable — no granian" in cell_page
    clause_page = page(tmp_path / "gen" / "clauses" / "MW-3.md")
    assert "hypercorn 0.18.0" in clause_page and "sync:swallowed" in clause_page


def test_the_regression_record_is_schema_checked(tmp_path):
    from bgmatrix.site import regression

    record = regression.read()  # the committed one
    assert record is not None and record.base.counts["passed"] > 0
    assert regression.read(tmp_path / "none.json") is None  # none yet: the page says so
    bad = tmp_path / "regression.json"
    data = json.loads(regression.PATH.read_text(encoding="utf-8"))
    del data["without_patch"]["counts"]["passed"]
    bad.write_text(json.dumps(data))
    with pytest.raises(regression.RegressionError, match="without_patch/counts") as err:
        regression.read(bad)
    assert "\n" not in str(err.value)
    bad.write_text("{")
    with pytest.raises(regression.RegressionError, match="unreadable"):
        regression.read(bad)


# ---------------------------------------------------------------------------------------------
# The report step as a person runs it: progress while it works, Ctrl-C keeps the previous site


def test_report_prints_progress_and_ctrl_c_keeps_the_previous_build(tmp_path):
    import signal
    import subprocess
    import sys

    from bgmatrix.spec import ROOT

    folder = write_results(tmp_path / "results", synthetic_results(stride=4, fail_every=11))
    site, gen = tmp_path / "site", tmp_path / "gen"
    for d in (site, gen):
        d.mkdir()
        (d / "previous.txt").write_text("the previous build", encoding="utf-8")
    (tmp_path / "none").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgmatrix", "report", "--results", str(folder), "--out", str(gen),
         "--site-dir", str(site), "--previous", str(tmp_path / "none")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # interrupt once it says it is generating pages
        seen.append(line)
        if "generating pages" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert any("report: reading" in s for s in seen), seen
    assert any("generating pages" in s for s in seen), seen
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["bgmatrix report: interrupted"], err
    for d in (site, gen):  # the previous build, untouched; no temporary folder left beside it
        assert sorted(p.name for p in d.iterdir()) == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen", "none", "results", "site"]


def _ctrl_c_right_after(monkeypatch, module, name):
    """Make ``module.name`` deliver a real SIGINT to this process just after it has created
    its file or folder: the narrowest window in which a Ctrl-C could orphan it."""
    import signal

    real = getattr(module, name)

    def creating_then_interrupted(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(module, name, creating_then_interrupted)


def test_a_ctrl_c_as_the_staging_folder_is_made_leaves_no_folder(tmp_path, monkeypatch):
    import tempfile

    _ctrl_c_right_after(monkeypatch, tempfile, "mkdtemp")
    with pytest.raises(KeyboardInterrupt):
        with build.staging(tmp_path / "gen"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_as_an_atomic_write_starts_leaves_no_file(tmp_path, monkeypatch):
    import tempfile

    from bgmatrix import files

    (tmp_path / "a.json").write_text("old", encoding="utf-8")
    _ctrl_c_right_after(monkeypatch, tempfile, "mkstemp")
    with pytest.raises(KeyboardInterrupt):
        files.write_text_atomic(tmp_path / "a.json", "new")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == "old"


def test_a_ctrl_c_between_the_two_renames_of_a_swap_still_swaps_whole(tmp_path, monkeypatch):
    """Between ``final → old`` and ``new → final`` no build exists: the swap finishes first."""
    import signal

    final, new = tmp_path / "site", tmp_path / "stage" / "new"
    final.mkdir()
    (final / "a").write_text("previous", encoding="utf-8")
    new.mkdir(parents=True)
    (new / "a").write_text("built", encoding="utf-8")
    real_rename = Path.rename

    def rename(self, target):
        moved = real_rename(self, target)
        if Path(target).name == "old":  # the first of the two
            os.kill(os.getpid(), signal.SIGINT)
        return moved

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        build.publish(new, final)
    assert (final / "a").read_text(encoding="utf-8") == "built"


def test_changes_compare_a_snapshot_stored_before_schema_3_verdict_for_verdict(tmp_path):
    """Schema 3 changed only how results are stored: a previous snapshot in schema 2 (each
    clause a mapping) still compares, and shows no change where none happened."""
    found = synthetic_results(stride=8, fail_every=11)
    folder = write_results(tmp_path / "results", found)
    old = tmp_path / "old"
    old.mkdir()
    for path in results.result_paths(folder):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["schema_version"] = 2
        data["clauses"] = results.clause_entries(data)
        (old / path.name).write_text(json.dumps(data), encoding="utf-8")
    (old / "broken.json").write_text('{"schema_version": 2, "cell": {}}', encoding="utf-8")
    previous = changes.from_folder(old)
    assert [u.split(":")[0] for u in previous.unreadable] == ["broken.json"]
    diff = changes.compare(previous, snapshot_of(found))
    assert diff.empty, diff
    # and a real change still shows
    cid = next(c for c, r in sorted(found.items()) if r["state"] == "ok")
    data = json.loads((old / f"{cid}.json").read_text(encoding="utf-8"))
    clause = next(iter(data["clauses"]))
    data["clauses"][clause]["label"] = "something-else"
    (old / f"{cid}.json").write_text(json.dumps(data), encoding="utf-8")
    diff = changes.compare(changes.from_folder(old), snapshot_of(found))
    assert [(c, k) for c, k, _, _ in diff.verdicts] == [(cid, clause)]


def test_a_report_with_nothing_changed_keeps_the_last_build(tmp_path, capsys):
    """The second run hashes its inputs, finds the last build made from the same ones and
    keeps it; a changed result, or --rebuild, builds again."""
    found = synthetic_results(stride=16, fail_every=11)
    folder = write_results(tmp_path / "results", found)
    code, site = build_site(tmp_path, folder)
    assert code == 0
    marks = {d: (d / build.INPUTS_FILE).read_text(encoding="utf-8")
             for d in (site, tmp_path / "gen")}
    assert "\n  <" not in (site / "404.html").read_text(encoding="utf-8")  # site/hooks.py ran
    assert len(set(marks.values())) == 1
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*.html")}
    capsys.readouterr()
    assert build_site(tmp_path, folder)[0] == 0
    assert "nothing the site is made from changed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*.html")} == before
    # the same from another process, as a person runs it (nothing of one run's process state,
    # such as the handler function's address, may enter the hash)
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, "-m", "bgmatrix", "report", "--results", str(folder),
         "--out", str(tmp_path / "gen"), "--site-dir", str(site),
         "--previous", str(tmp_path / "none"), "--plan", str(tmp_path / "plan.json")],
        cwd=spec.ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, BGMATRIX_WORK=str(tmp_path / "work")))
    assert proc.returncode == 0 and "nothing the site is made from changed" in proc.stdout, (
        proc.stdout + proc.stderr)
    assert build_site(tmp_path, folder, "--rebuild")[0] == 0
    assert "nothing the site is made from changed" not in capsys.readouterr().out
    # one label changed in one result: built again, and the page shows it
    cid = next(c for c, r in sorted(found.items())
               if r["state"] == "ok" and "ATTACH-3" in r["clauses"])
    changed = copy.deepcopy(found[cid])
    changed["clauses"]["ATTACH-3"]["label"] = "relabelled-x7"  # the clause a cell page cites
    results.write(folder / f"{cid}.json", changed)
    assert build_site(tmp_path, folder)[0] == 0
    assert "nothing the site is made from changed" not in capsys.readouterr().out
    assert "relabelled" in (site / "cells" / f"{cid}.html").read_text(encoding="utf-8")
    assert (site / build.INPUTS_FILE).read_text(encoding="utf-8") != marks[site]


def test_compact_page_keeps_preformatted_text_and_scripts_as_they_are():
    page = ('<div>\n    <p>a\n      b</p>\n\n  <pre class="x">  keep\n    this</pre>\n'
            '  <script>var a = 1;\n    a += 1</script>\n  <TEXTAREA>\n  t</TEXTAREA>\n'
            '</div>\n')
    assert build.compact_page(page) == (
        '<div>\n<p>a\nb</p>\n<pre class="x">  keep\n    this</pre>\n'
        '<script>var a = 1;\n    a += 1</script>\n<TEXTAREA>\n  t</TEXTAREA>\n</div>\n')


def test_compact_page_drops_the_references_only_markdown_needed():
    """After Markdown, ``ATTACH&#45;3`` is written ``ATTACH-3``: the same text to a browser.
    What HTML itself reads (``& < > " '``, line breaks) stays a reference, and scripts are
    left as they are."""
    evidence = 'ATTACH-3 `x` *y* _z_ [a](b) {c} #d +e !f |g ~h \\i <j> & "k" \'l\'\nm'
    escaped = esc(evidence)
    page = (f'<p title="{escaped}">{escaped}</p><pre>{escaped}</pre>'
            f'<script type="application/json">{{"a": "&#45;"}}</script>')
    out = build.compact_page(page)
    plain = 'ATTACH-3 `x` *y* _z_ [a](b) {c} #d +e !f |g ~h \\i'
    assert out.count(plain) == 3 and "&#45;" in out.split("<script")[1]
    assert out.count("&#60;j&#62; &#38; &#34;k&#34; &#39;l&#39;&#10;m") == 3
    # What a browser reads is unchanged, text and attribute alike.
    assert html.unescape(out.split("<script")[0]) == html.unescape(page.split("<script")[0])
