"""Fault suite (issue 8): nothing is lost or corrupted, and every failure explains itself.

Real processes, no network: sweeps run as ``python -m bgmatrix run`` in their own process
group over planned cells whose releases are tiny fake wheels served to uv from a local folder
(``UV_NO_INDEX=1``, ``UV_FIND_LINKS``); "no network" is every proxy pointing at a dead port
on 127.0.0.1.  Waiting is bounded polling on evidence (a result file, a line in the fake
releases' import log), never a sleep.  Fixture builders live in tests/unit/faults/.

Faults: a sweep killed (SIGINT, SIGKILL) while a cell's suite or import probe runs; two sweeps
at once on one results folder; releases that do not install, do not import, hang, or leave a
background task running forever; bad arguments; bad result files; hostile evidence; no
network; no interpreter.  Where a fault still loses or misstates data, the test says so as an
expected failure naming the gap (``GAP_*`` below), so the suite stays green and the gap
visible until it is fixed.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgmatrix import cli, results
from bgmatrix.plan import store
from bgmatrix.run import runner, sweep
from bgmatrix.site import build
from bgmatrix.spec import ROOT
from tests.unit.faults import offline, suites, wheels
from tests.unit.faults.offline import PYTHON, Runner, World, starlette_cell, wait_until

# -- the offline world ----------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path) -> World:
    """Fake releases served from a local folder, the suite's tools linked from the host."""
    w = World(tmp_path / "world")
    offline.install_tools(w.work)
    return w


@pytest.fixture
def inproc(world, monkeypatch) -> World:
    """The same world for runner.run_cell / sweep.sweep called in this process."""
    world.enter(monkeypatch)
    return world


def marker(c: dict) -> tuple[str, str]:
    """The fake package whose import log counts this cell's runs, and its version."""
    name = "fastapi" if c.get("fastapi") else "starlette"
    return name, c[name]


def planned_cells(n: int) -> list[dict]:
    """``n`` planned cells on the host's Python whose marker releases differ, Starlette-only
    ones first (one fake wheel each)."""
    pool = [c for c in store.load_cells() if c["python"] == PYTHON]
    pool.sort(key=lambda c: c["kind"] != "starlette")
    chosen, seen = [], set()
    for c in pool:
        if marker(c) not in seen:
            seen.add(marker(c))
            chosen.append(c)
    if len(chosen) < n:
        pytest.skip(f"the plan has fewer than {n} cells on Python {PYTHON}")
    return chosen[:n]


def add_release(w: World, c: dict, **behaviour) -> None:
    """Fake wheels for a planned cell; the marker package carries ``behaviour``."""
    name, version = marker(c)
    wheels.fake_release(w.links, name, version, w.log, **behaviour)
    if name == "fastapi" and c.get("starlette"):
        if not (w.links / f"starlette-{c['starlette']}-py3-none-any.whl").exists():
            wheels.fake_release(w.links, "starlette", c["starlette"], w.log)


def runs(w: World, c: dict, role: str = "suite") -> int:
    name, version = marker(c)
    return wheels.imports(w.log, name, role).get(version, 0)


def fingerprint(path: Path) -> tuple[int, int, bytes]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def assert_store_clean(folder: Path) -> dict[str, dict]:
    """Every file is a complete, valid result (its evidence beside it); no temporary file is
    left, in the folder or in its evidence store."""
    stray = [p.name for p in folder.iterdir()
             if (p.suffix != ".json" or p.name.startswith(".")) and p.name != "evidence"]
    store = folder / "evidence"
    if store.is_dir():
        stray += [f"evidence/{p.name}" for p in store.iterdir()
                  if (p.suffix != ".jsonl" or p.name.startswith(".")) and p.name != ".lock"]
    assert not stray, stray
    return {p.stem: results.load(p) for p in results.result_paths(folder)}


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def tree(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folders``: (size, mtime) by path."""
    out = {}
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def visible(page: Path) -> str:
    """A built page's text as a reader sees it: tags dropped, character references resolved."""
    return html.unescape(re.sub(r"<[^>]*>", "", page.read_text(encoding="utf-8")))


def build_site(tmp_path: Path, results_dir: Path, *extra: str) -> int:
    (tmp_path / "none").mkdir(exist_ok=True)  # no previous snapshot: git is not asked
    if "--plan" not in extra:  # the test's own cells are the plan: it checks other faults
        cells = [plan_cell(json.loads(p.read_text())["cell"])
                 for p in results.result_paths(results_dir) if _is_json(p)]
        # (a file planted with another file's cell must not make the plan itself invalid)
        cells = list({c["id"]: c for c in cells if c["kind"] != "candidate"}.values())
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"schema": 1, "cells": cells, "fastapi": [],
                                    "starlette": []}))
        extra = ("--plan", str(plan), *extra)
    return cli.main(["report", "--results", str(results_dir), "--out", str(tmp_path / "gen"),
                        "--site-dir", str(tmp_path / "site"), "--previous",
                        str(tmp_path / "none"), *extra])


def plan_cell(cell: dict) -> dict:
    """The plan's record of a result's cell (what the plan store requires of one)."""
    keys = ("id", "kind", "fastapi", "starlette", "python", "cutoff", "in_declared_range")
    return {**{k: cell.get(k) for k in keys}, "tags": [], "starlette_bound": None}


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


# -- interruption ---------------------------------------------------------------------------------


INTERRUPTIONS = [  # (signal, where the cell is, repetition)
    ("SIGKILL", "suite", 1), ("SIGKILL", "suite", 2), ("SIGKILL", "probe", 1),
    ("SIGKILL", "probe", 2), ("SIGINT", "suite", 1), ("SIGINT", "probe", 1),
]


@pytest.mark.parametrize("sig, point, rep", INTERRUPTIONS,
                         ids=[f"{s.lower()}-in-{p}-{r}" for s, p, r in INTERRUPTIONS])
def test_an_interrupted_sweep_loses_nothing_and_resumes(world, sig, point, rep):
    """Kill a real sweep while the second of three cells runs its suite (or its import
    probe, the last step before its result is written); restart it."""
    first, killed, last = cells = planned_cells(3)
    gate = world.gate("open")
    for c in cells:
        add_release(world, c, **({"gate": gate, "block_in": (point,)} if c is killed else {}))
    folder = world.root / "results"
    args = ["bgmatrix", "run", *(c["id"] for c in cells), "-j", "1", "--results", str(folder)]
    env = world.env(BGMATRIX_SUITE_TIMEOUT="120")
    done = folder / f"{first['id']}.json"

    run1 = Runner(world.root, "run1", args, env)
    try:
        wait_until(lambda: done.exists() and runs(world, killed, point), 90,
                   f"{first['id']} to finish and {killed['id']} to be in its {point}", run1.proc)
        before = fingerprint(done)
        run1.signal_group(getattr(signal, sig))
        rc = run1.wait(60)
        wait_until(lambda: not group_members(run1.proc.pid), 30, "the process group to be gone")
    finally:
        run1.stop()
    assert rc == (-signal.SIGKILL if sig == "SIGKILL" else 130), run1.output
    if sig == "SIGINT":
        assert "interrupted: 1 finished; run again to resume" in run1.output
    stored = assert_store_clean(folder)
    assert first["id"] in stored and runs(world, last) == 0
    stale = stored.get(killed["id"])
    if sig == "SIGKILL":
        assert stale is None  # a killed cell leaves no result, not half of one

    gate.touch()
    restarted = time.time()
    run2 = Runner(world.root, "run2", args, env)
    try:
        assert run2.wait(120) == 0, run2.output
    finally:
        run2.stop()
    stored = assert_store_clean(folder)
    assert fingerprint(done) == before and runs(world, first) == 1  # finished: not re-run
    assert runs(world, last) == 1 and last["id"] in stored
    assert runs(world, killed) == 2  # the killed cell, and only it, ran again
    assert (folder / f"{killed['id']}.json").stat().st_mtime >= restarted - 1
    assert "1 current, 2 to run" in run2.output


@pytest.mark.parametrize("rep", range(3))
def test_two_sweeps_at_once_run_each_cell_once(world, rep):
    """Two real sweeps (two workers each) start together on one results folder; every cell
    blocks until all three are claimed, then the sweep holding one cell is let finish first,
    while the other's cells (busy for it) still run."""
    cells = planned_cells(3)
    gates = {c["id"]: world.gate(c["id"]) for c in cells}
    for c in cells:
        add_release(world, c, gate=gates[c["id"]])
    folder = world.root / "results"
    args = ["bgmatrix", "run", *(c["id"] for c in cells), "-j", "2", "--results", str(folder)]
    env = world.env(BGMATRIX_SUITE_TIMEOUT="120")
    sweeps = [Runner(world.root, name, args, env) for name in ("a", "b")]
    try:
        wait_until(lambda: all("3 cells: 0 current, 3 to run" in s.output for s in sweeps)
                   and sum(runs(world, c) for c in cells) == 3, 90,
                   "both sweeps to start and every cell to be claimed")
        owner = {}
        for c in cells:
            name, version = marker(c)
            owner[c["id"]] = wheels.runners(world.log, name)[version][0]
        held = {s.proc.pid: [cid for cid, pid in owner.items() if pid == s.proc.pid]
                for s in sweeps}
        assert sorted(len(v) for v in held.values()) == [1, 2], held  # two workers at most
        first, second = sorted(sweeps, key=lambda s: len(held[s.proc.pid]))
        for cid in held[first.proc.pid]:
            gates[cid].touch()
        code_first = first.wait(120)
        for gate in gates.values():
            gate.touch()
        code_second = second.wait(120)
    finally:
        for s in sweeps:
            s.stop()
    assert [runs(world, c) for c in cells] == [1, 1, 1]  # no cell ran twice
    assert sorted(assert_store_clean(folder)) == sorted(c["id"] for c in cells)
    assert code_second == 0, second.output
    assert "1 busy" in second.output or "1 current" in second.output, second.output
    assert code_first == 0, first.output
    assert "1 run, 0 current, 2 busy" in first.output, first.output


# -- broken releases ------------------------------------------------------------------------------

BROKEN = {  # expected state: (cell, what the fake release does)
    "install-error": (starlette_cell("st-0.0.1_py3.11", "0.0.1"), None),  # not in the links
    "import-error": (starlette_cell("st-0.0.2_py3.11", "0.0.2"),
                     {"raises": "fault-suite: release 0.0.2 cannot be imported"}),
    "timeout": (starlette_cell("st-0.0.3_py3.11", "0.0.3"), {"gate": "never"}),
    # A release whose modules are missing cannot be imported by any app: the probe imports
    # starlette.applications, so this is an import-error too, told apart by its message.
    "import-error (no modules)": (starlette_cell("st-0.0.4_py3.11", "0.0.4"), {}),
    "no-interpreter": (starlette_cell("st-0.0.5_py3.99", "0.0.5", python="3.99"), {}),
}


def test_broken_releases_are_recorded_states_and_the_sweep_goes_on(inproc, monkeypatch,
                                                                     tmp_path):
    # Short enough for the hanging release, long enough for the others on a busy machine.
    read = subprocess.run([sys.executable, "-c", "from bgmatrix.run import runner; "
                           "print(runner.SUITE_TIMEOUT)"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "BGMATRIX_SUITE_TIMEOUT": "10"},
                          timeout=60)
    assert read.stdout.strip() == "10", read.stderr
    monkeypatch.setattr(runner, "SUITE_TIMEOUT", 10)  # what BGMATRIX_SUITE_TIMEOUT=10 sets
    for c, behaviour in BROKEN.values():
        if behaviour is not None:
            if "gate" in behaviour:
                behaviour = {"gate": inproc.gate(behaviour["gate"])}  # never opened
            wheels.fake_release(inproc.links, "starlette", c["starlette"], inproc.log,
                                **behaviour)
    folder = tmp_path / "results"
    cells = [c for c, _ in BROKEN.values()]
    progress = io.StringIO()
    summary = sweep.sweep(cells, folder, jobs=2, out=progress)
    assert summary.done == {c["id"]: state.split()[0] for state, (c, _) in BROKEN.items()}, \
        progress.getvalue()
    stored = assert_store_clean(folder)
    for state, (c, _) in BROKEN.items():
        assert stored[c["id"]]["state"] == state.split()[0] and stored[c["id"]]["clauses"] == {}
        assert c["id"] in progress.getvalue()
    msg = {state: stored[c["id"]]["message"] for state, (c, _) in BROKEN.items()}
    assert "no version of starlette==0.0.1" in msg["install-error"]  # the resolver's words
    assert not msg["install-error"].startswith("package index unreachable")
    assert "Traceback" in msg["import-error"] and "starlette/__init__.py" in msg["import-error"]
    assert "RuntimeError: fault-suite: release 0.0.2 cannot be imported" in msg["import-error"]
    # The traceback names the cell's environment by a fixed placeholder, not its random
    # folder: the same failure is the same bytes in every run.
    assert runner.ENV_PLACEHOLDER in msg["import-error"] and "/envs/" not in msg["import-error"]
    assert msg["timeout"] == "the suite did not finish within 10s"
    assert "No module named 'starlette.applications'" in msg["import-error (no modules)"]
    assert "no CPython 3.99" in msg["no-interpreter"]

    # Again: every recorded state is current, except a missing interpreter (asked again).
    again = sweep.sweep(cells, folder, jobs=2, out=io.StringIO())
    assert again.skipped == 4 and again.done == {BROKEN["no-interpreter"][0]["id"]:
                                                 "no-interpreter"}

    # Each state, with its message, on the site.
    assert build_site(tmp_path, folder) == 0
    site = tmp_path / "site"
    index = visible(site / "cells" / "index.html")
    for state, (c, _) in BROKEN.items():
        assert c["id"] in index
        page = visible(site / "cells" / f"{c['id']}.html")
        assert f"State: {state.split()[0]}" in page, (state, c["id"])
        assert msg[state].strip().splitlines()[-1][:60] in page


def test_an_import_that_never_returns_is_a_timeout_not_a_crash(inproc, monkeypatch):
    monkeypatch.setattr(runner, "SUITE_TIMEOUT", 2)
    c = starlette_cell("st-0.0.6_py3.11", "0.0.6")
    wheels.fake_release(inproc.links, "starlette", "0.0.6", inproc.log,
                        gate=inproc.gate("never"), block_in=("suite", "probe"))
    real_run = subprocess.run

    def probe_capped(cmd, *args, **kwargs):  # the probe's 120 s budget, cut to 3 s
        if runner._PROBE in cmd:
            kwargs["timeout"] = 3
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", probe_capped)
    result = runner.run_cell(c)
    assert result["state"] in ("timeout", "import-error")


# -- the recorder: scenarios that never return, hostile evidence ----------------------------------


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    """tests/spec's recorder run on the fault scenarios, as run_suite runs a cell's suite."""
    folder = suites.scenario_suite(tmp_path_factory.mktemp("scenarios"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "SUITE_DIR", folder)
        started = time.monotonic()
        rc, records, session = runner.run_suite(
            Path(sys.executable), {"id": "faults", "kind": "fastapi"}, folder / "records.jsonl")
        elapsed = time.monotonic() - started
    return {"rc": rc, "records": {r["test"].split("::")[-1]: r for r in records},
            "session": session, "elapsed": elapsed, "jsonl": folder / "records.jsonl"}


def test_a_background_task_that_never_returns_is_a_recorded_timeout(scenarios):
    """One task awaits forever, one blocks a thread forever: both are recorded as timeouts
    and pytest still exits at once (the recorder does not wait for the stuck thread)."""
    lines = [json.loads(line) for line in scenarios["jsonl"].read_text().splitlines()]
    outcome = {d["test"].split("::")[-1]: d["outcome"] for d in lines if "test" in d}
    for name in ("test_background_awaits_forever", "test_background_blocks_a_thread_forever"):
        assert outcome[name] == "timeout"
        assert scenarios["records"][name]["error"] == "scenario did not finish within 1s"
    assert scenarios["session"]["exitstatus"] == scenarios["rc"] == 1  # the hostile test
    assert scenarios["elapsed"] < 30, scenarios["session"]["output"][-2000:]
    result = runner.result_for({"id": "faults", "kind": "fastapi", "python": PYTHON}, "ok", None,
                             {"spec_version": "x", "suite_hash": "x", "tools": {}},
                             list(scenarios["records"].values()))
    assert result["clauses"]["EXEC-1"]["verdict"] == result["clauses"]["EXEC-2"]["verdict"] == (
        "timeout")


def test_hostile_evidence_is_intact_in_the_raw_result_and_escaped_on_the_site(scenarios,
                                                                           tmp_path):
    c = {"id": "fa-9.9.9_st-9.9.9_py3.11", "kind": "fastapi", "fastapi": "9.9.9",
         "starlette": "9.9.9", "python": PYTHON, "cutoff": "2026-01-01T00:00:00Z",
         "in_declared_range": True}
    records = list(scenarios["records"].values())
    state, message = runner._suite_state(scenarios["rc"], records, scenarios["session"])
    # The cell's message is the tail of a megabyte: it still ends by naming the exception.
    assert state == "harness-error" and message.rstrip().endswith("ValueError")
    assert len(message) <= 3001 and message.startswith("…")
    folder = tmp_path / "results"
    path = folder / f"{c['id']}.json"
    results.write(path, runner.result_for(c, state, message, runner.base_provenance(), records))
    assert path.read_bytes().isascii()
    raw = {t["test"].split("::")[-1]: t for t in results.load(path)["tests"]}
    hostile = suites.HOSTILE
    seen = raw["test_app_warns_and_raises_hostile_text"]
    exchange = seen["observations"]["request"]
    assert exchange["app_exception"] == {"type": "RuntimeError", "message": hostile}
    assert [w["message"] for w in exchange["warnings"]] == [hostile]
    assert seen["verdicts"]["EXEC-5"]["label"] == suites.HOSTILE_LABEL
    assert f"ValueError: {hostile}" in raw["test_the_harness_breaks_with_hostile_text"]["error"]

    assert build_site(tmp_path, folder) == 0
    site = tmp_path / "site"
    pages = sorted(site.rglob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")  # strict: no lone surrogate got through
        assert page.stat().st_size < build.PAGE_LIMIT, page
        for raw_markup in ("<script>alert(", "<img src=x", "\x00", "\x1b", "\u202e"):
            assert raw_markup not in text, (page, raw_markup)
    page = visible(site / "cells" / f"{c['id']}.html")
    assert "<script>alert('x1')</script>" in page  # shown, as text
    assert "more characters in the raw result" in page and "M" * 100_000 not in page
    assert "\ufffd" in page
    # The raw result is linked, not copied into the site: the committed file keeps everything.
    assert not (site / "results").exists()


# -- bad arguments --------------------------------------------------------------------------------


BAD_ARGUMENTS = [
    ("unknown-version", ["-m", "bgmatrix", "run", "starlette==0.0.0", "--results", "{tmp}/out"],
     "starlette 0.0.0 is not a planned release", True),
    ("unknown-cell", ["-m", "bgmatrix", "run", "st-0.0.0_py3.11", "--results", "{tmp}/out"],
     "unknown cell 'st-0.0.0_py3.11'", True),
    ("bad-candidate-path", ["-m", "bgmatrix", "candidates", "/nonexistent", "--results",
                            "{tmp}/out"], "no such file or directory", True),
    ("unknown-clause", ["-m", "bgmatrix", "cite", "NOPE-1"], "unknown clause 'NOPE-1'", True),
    ("unknown-session", ["nox", "-s", "no-such-session"], "no-such-session", False),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A private copy of the project with two good results: commands run there (cwd and
    PYTHONPATH), so "nothing written" is not confused by people working in the real tree."""
    root = offline.project_copy(tmp_path_factory.mktemp("project"))
    _good_results(root / "results")
    return root


def in_project(project: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    return {**(base or os.environ), "PYTHONPATH": str(project)}


@pytest.mark.parametrize("args, says, one_line", [a[1:] for a in BAD_ARGUMENTS],
                         ids=[a[0] for a in BAD_ARGUMENTS])
def test_bad_arguments_say_what_is_wrong_and_write_nothing(args, says, one_line, project,
                                                          tmp_path):
    if args[0] == "nox":
        if not shutil.which("nox"):
            pytest.skip("nox is not installed")
        cmd = [shutil.which("nox"), *args[1:]]
    else:  # a renamed module fails here ("No module named ..."), it is not skipped
        cmd = [sys.executable, *(a.format(tmp=tmp_path) for a in args)]
    watched = (project / "results", project / "site", project / "matrix")
    before = tree(*watched)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=project,
                          env=in_project(project), timeout=120)
    assert proc.returncode == (2 if one_line else proc.returncode) != 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any(says in line for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr
    if one_line:
        assert len(lines) == 1, proc.stderr
    assert not (tmp_path / "out").exists()
    assert tree(*watched) == before


def test_a_results_folder_that_does_not_exist_publishes_nothing(tmp_path, capsys):
    previous = tmp_path / "site"
    previous.mkdir()
    (previous / "index.html").write_text("the published site")
    code = build_site(tmp_path, tmp_path / "no-such-results")
    assert code == 2 and "no-such-results" in capsys.readouterr().err
    assert digest_tree(previous) == {"index.html": hashlib.sha256(b"the published site")
                                     .hexdigest()}


# -- bad data -------------------------------------------------------------------------------------


def _good_results(folder: Path) -> dict[str, dict]:
    from tests.unit.test_report import conflict, make_result

    found = {cid: make_result(cid, fastapi=v, outcomes=conflict("drop"))
             for cid, v in (("fa-0.100.0_st-0.27.0_py3.8", "0.100.0"),
                            ("fa-0.101.0_st-0.27.0_py3.8", "0.101.0"))}
    for cid, data in found.items():
        results.write(folder / f"{cid}.json", data)
    return found


def test_bad_result_files_stop_the_report_and_leave_the_previous_site(tmp_path, capsys):
    folder = tmp_path / "results"
    good = _good_results(folder)
    assert build_site(tmp_path, folder) == 0
    published = {name: digest_tree(tmp_path / name) for name in ("site", "gen")}
    data = next(iter(good.values()))
    text = (folder / f"{data['cell']['id']}.json").read_text()  # as stored
    bad = {
        "fa-0.102.0_st-0.27.0_py3.8.json": (text[: len(text) // 2], "not valid JSON"),
        "fa-0.103.0_st-0.27.0_py3.8.json": (
            text.replace('"schema_version": 3', '"schema_version": 2'), "schema_version 2"),
        "fa-0.104.0_st-0.27.0_py3.8.json": (text, "contradicts its file name"),
    }
    for name, (content, says) in bad.items():
        (folder / name).write_text(content)
        capsys.readouterr()
        assert build_site(tmp_path, folder) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and says in err[0], err
        assert {n: digest_tree(tmp_path / n) for n in ("site", "gen")} == published, name
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging
        assert cli.main(["show", Path(name).stem, "--results", str(folder)]) == 2
        assert says in capsys.readouterr().err
        (folder / name).unlink()


@pytest.mark.parametrize("contradiction", ["not-planned", "cutoff", "versions"])
def test_results_the_plan_contradicts_are_not_published(contradiction, tmp_path, capsys):
    from tests.unit.test_report import conflict, make_result

    planned = next(c for c in store.load_cells() if c["kind"] == "fastapi")
    cid = planned["id"]
    data = make_result(cid, fastapi=planned["fastapi"], starlette=planned["starlette"],
                       python=planned["python"], outcomes=conflict("drop"))
    data["cell"]["cutoff"] = planned["cutoff"]
    if contradiction == "not-planned":  # a cell the plan no longer has
        cid = data["cell"]["id"] = "fa-0.0.1_st-0.0.1_py3.8"
        data["cell"].update(fastapi="0.0.1", starlette="0.0.1")
    elif contradiction == "cutoff":  # measured against an older plan
        data["cell"]["cutoff"] = "2000-01-01T00:00:00Z"
    else:  # the file name says one release, the result another
        data["cell"]["fastapi"] = data["provenance"]["fastapi"] = "0.0.2"
    folder = tmp_path / "results"
    results.write(folder / f"{cid}.json", data)
    assert build_site(tmp_path, folder, "--no-build", "--plan", str(store.PLAN_PATH)) == 2
    assert f"{cid}.json" in capsys.readouterr().err
    assert not (tmp_path / "gen").exists()


# -- no network -----------------------------------------------------------------------------------


@pytest.mark.parametrize("out", [
    None,
    "plan.json",
], ids=["default-plan", "plan-out"])
def test_plan_without_network_says_the_index_could_not_be_reached(out, project, tmp_path):
    plan = project / "matrix" / "plan.json"
    before = plan.read_bytes()
    committed = {p.name for p in plan.parent.iterdir()}  # the plan and the other records
    env = offline.dead_network_env(tmp_path, in_project(project))
    args = ["--out", str(tmp_path / out)] if out else []
    proc = subprocess.run([sys.executable, "-m", "bgmatrix", "plan", *args], capture_output=True,
                          text=True, cwd=project, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "package index could not be reached" in lines[0], proc.stderr
    assert plan.read_bytes() == before
    # No temp file beside the committed files of matrix/.
    assert {p.name for p in plan.parent.iterdir()} == committed


def test_watch_without_network_says_the_index_could_not_be_reached(project, tmp_path):
    plan = project / "matrix" / "plan.json"
    before = plan.read_bytes()
    summary = tmp_path / "summary.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bgmatrix", "watch", "--results", str(tmp_path / "results"),
         "--summary", str(summary)],
        capture_output=True, text=True, cwd=project,
        env=offline.dead_network_env(tmp_path, in_project(project)), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "package index could not be reached" in lines[0], proc.stderr
    assert plan.read_bytes() == before
    assert not (tmp_path / "results").exists() and not summary.exists()


def test_a_cell_install_without_network_says_the_index_is_unreachable(world, monkeypatch):
    monkeypatch.setattr(runner, "WORK_DIR", world.work)
    for key in list(os.environ):
        if key.startswith("UV_") or key.upper() == "NO_PROXY":
            monkeypatch.delenv(key)
    for key, value in offline.dead_network_env(world.root, {}).items():
        monkeypatch.setenv(key, value)
    c = dict(starlette_cell("st-0.27.0_py3.11", "0.27.0"), cutoff="2024-01-01T00:00:00Z")
    result = runner.run_cell(c)
    assert result["state"] == "install-error"
    assert result["message"].startswith("package index unreachable: "), result["message"]
    assert "connect" in result["message"].lower()  # uv's own words are kept
    assert "http" not in result["message"]  # addresses are redacted
