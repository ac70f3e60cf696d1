"""The release watch, offline: a fake index with one release more than the plan, and a fake
cell runner whose verdict decides whether behaviour changed."""


import pytest

from bgmatrix import cli, results, spec
from bgmatrix.plan.index import IndexUnavailable, Release
from bgmatrix.plan.planner import build_plan
from bgmatrix.plan.store import load_plan, write_plan
from bgmatrix.run import runner, watch
from tests.unit.test_plan import load_fixture

FASTAPI, STARLETTE = load_fixture()
NEW_FASTAPI = Release(version="0.131.0", uploaded="2026-03-01T12:00:00Z",
                      requires_python=">=3.10",
                      requires_dist=("starlette>=0.27.0", "pydantic>=2.7.0"))
NEW_STARLETTE = Release(version="1.0.1", uploaded="2026-04-01T12:00:00Z",
                        requires_python=">=3.11")
#: What the fake new release's cells are: lowest and highest Starlette, the newest release
#: also on every newer interpreter.
NEW_CELLS = ["fa-0.131.0_st-0.27.0_py3.10", "fa-0.131.0_st-1.0.0_py3.11",
             "fa-0.131.0_st-1.0.0_py3.12", "fa-0.131.0_st-1.0.0_py3.13"]


class FakeIndex:
    """Answers like the package index would, from lists; or fails like an unreachable one."""

    def __init__(self, fastapi, starlette, fail=False):
        self.fastapi, self.starlette, self.fail = list(fastapi), list(starlette), fail
        self.calls: list[str] = []

    def versions(self):
        self.calls.append("versions")
        if self.fail:
            raise IndexUnavailable("package index could not be reached: ConnectionError: "
                                   "Name or service not known")
        return self.fastapi, self.starlette

    def releases(self):
        self.calls.append("releases")
        return self.fastapi, self.starlette


def result(c, verdict="conforms", label="merge", state="ok"):
    """A valid result for cell ``c`` whose one test grades ATTACH-3 as given."""
    record = {"test": "tests/spec/test_attachment.py::test_conflict", "clauses": ["ATTACH-3"],
              "outcome": "ok", "error": None, "observations": {},
              "verdicts": {"ATTACH-3": {"verdict": verdict, "label": label}}}
    prov = {"spec_version": spec.spec_version(), "suite_hash": runner.suite_hash(),
            "tools": {}}
    if state != "ok":
        return runner.result_for(c, state, "ERROR: resolution failed\nno matching wheel", prov)
    return runner.result_for(c, "ok", None, prov, [record])


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A plan of the fixture releases with a result for every cell, and a fake cell runner."""
    plan_path = tmp_path / "plan.json"
    results_dir = tmp_path / "results"
    old = build_plan(FASTAPI, STARLETTE)
    write_plan(old, plan_path)
    for c in old["cells"]:
        results.write(results_dir / f"{c['id']}.json", result(c))
    runs: list[str] = []
    outcome = {"verdict": "conforms", "label": "merge", "state": "ok"}

    def run_cell(c, install=None):
        runs.append(c["id"])
        return result(c, **outcome)

    monkeypatch.setattr(runner, "run_cell", run_cell)
    monkeypatch.setattr(runner, "WORK_DIR", tmp_path / "work")
    return plan_path, results_dir, runs, outcome


def run(world, index, *extra):
    plan_path, results_dir = world[0], world[1]
    with pytest.MonkeyPatch.context() as mp:  # the real command line, with a fake index
        mp.setattr(watch, "LiveIndex", lambda: index)
        return cli.main(["watch", "--plan", str(plan_path), "--results", str(results_dir),
                         *extra])


def test_a_new_release_that_changes_a_verdict_exits_1_with_markdown(world, tmp_path, capsys):
    plan_path, results_dir, runs, outcome = world
    outcome.update(verdict="deviates", label="drop")
    summary = tmp_path / "summary.md"
    assert run(world, FakeIndex(FASTAPI + [NEW_FASTAPI], STARLETTE),
               "--summary", str(summary)) == 1
    markdown = capsys.readouterr().out
    assert sorted(runs) == sorted(NEW_CELLS)  # only the new cells ran
    assert "0.131.0" in {e["version"] for e in load_plan(plan_path)["fastapi"]}
    assert markdown.startswith("## bgmatrix watch: behaviour changed\n")
    assert "New on the package index since the plan: FastAPI 0.131.0." in markdown
    # Lowest against lowest, highest against highest on the same interpreter.
    assert ("### `fa-0.131.0_st-0.27.0_py3.10` against `fa-0.130.0_st-0.27.0_py3.10`"
            in markdown)
    assert ("### `fa-0.131.0_st-1.0.0_py3.13` against `fa-0.130.0_st-1.0.0_py3.13`"
            in markdown)
    title = spec.by_id()["ATTACH-3"].title
    assert f"| **ATTACH-3** {title} | conforms · `merge` | deviates · `drop` |" in markdown
    assert summary.read_text() == markdown


def test_a_new_release_that_behaves_the_same_exits_0(world, tmp_path, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("last week's")
    assert run(world, FakeIndex(FASTAPI + [NEW_FASTAPI], STARLETTE),
               "--summary", str(summary)) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("## bgmatrix watch: no behaviour changed\n")
    assert "- `fa-0.131.0_st-0.27.0_py3.10` behaves like `fa-0.130.0_st-0.27.0_py3.10`" in (
        markdown)
    assert not summary.exists()  # nothing to post, and never a stale file


def test_no_new_release_reads_only_the_version_lists_and_finishes_fast(world, capsys):
    plan_path, _, runs, _ = world
    before = plan_path.read_bytes()
    index = FakeIndex(FASTAPI, STARLETTE)
    assert run(world, index) == 0
    # "fast" is what it does not do: only the version lists are read, and nothing runs.
    assert index.calls == ["versions"] and runs == []
    assert plan_path.read_bytes() == before
    captured = capsys.readouterr()
    assert captured.out == "" and "no release newer than the plan" in captured.err


def test_an_unreachable_index_is_one_line_and_exit_2(world, capsys):
    plan_path, _, runs, _ = world
    before = plan_path.read_bytes()
    assert run(world, FakeIndex(FASTAPI, STARLETTE, fail=True)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be reached" in err
    assert plan_path.read_bytes() == before and runs == []


def test_a_release_that_no_longer_installs_is_a_change(world, capsys):
    world[3].update(state="install-error")
    assert run(world, FakeIndex(FASTAPI + [NEW_FASTAPI], STARLETTE)) == 1
    markdown = capsys.readouterr().out
    assert "| **cell state** | ok | install-error (no matching wheel) |" in markdown


def test_a_predecessor_without_a_result_is_listed_not_compared(world, capsys):
    _, results_dir, _, outcome = world
    outcome.update(verdict="deviates", label="drop")
    (results_dir / "fa-0.130.0_st-0.27.0_py3.10.json").unlink()
    code = run(world, FakeIndex(FASTAPI + [NEW_FASTAPI], STARLETTE))
    markdown = capsys.readouterr().out
    assert code == 1  # the highest-bound cells still compare, and differ
    assert ("- `fa-0.131.0_st-0.27.0_py3.10`: the previous cell "
            "`fa-0.130.0_st-0.27.0_py3.10` has no result in results/") in markdown


def test_a_new_starlette_is_compared_with_the_previous_starlette_and_moved_bounds():
    old = build_plan(FASTAPI, STARLETTE)
    new = build_plan(FASTAPI, STARLETTE + [NEW_STARLETTE])
    known = {c["id"] for c in old["cells"]}
    pairs = {c["id"]: (watch.previous_cell(c, old, new) or {}).get("id")
             for c in new["cells"] if c["id"] not in known}
    assert pairs == {
        "st-1.0.1_py3.11": "st-1.0.0_py3.11",
        # FastAPI 0.130.0 allows the new Starlette: its highest cell moves, and is compared
        # with the highest cell it replaces.
        "fa-0.130.0_st-1.0.1_py3.11": "fa-0.130.0_st-1.0.0_py3.11",
        "fa-0.130.0_st-1.0.1_py3.12": "fa-0.130.0_st-1.0.0_py3.12",
        "fa-0.130.0_st-1.0.1_py3.13": "fa-0.130.0_st-1.0.0_py3.13",
    }


def test_new_versions_ignore_yanked_pre_and_below_floor_releases():
    plan = build_plan(FASTAPI, STARLETTE)
    extra = [
        Release(version="0.132.0", uploaded="2026-05-01T00:00:00Z", yanked=True),
        Release(version="0.133.0rc1", uploaded="2026-05-02T00:00:00Z"),
        Release(version="0.9.0", uploaded="2019-01-01T00:00:00Z"),
        NEW_FASTAPI,
    ]
    assert watch.new_versions(plan, FASTAPI + extra, STARLETTE) == (["0.131.0"], [])
