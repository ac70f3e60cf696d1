"""Deployment mode (spec/deployment.md, DEPLOY-1 to DEPLOY-4): its labels from synthetic
effect logs, the record it writes and the site reads, one-line errors, and one live scenario.

The live test builds the newest FastAPI headline cell, sends SIGTERM to uvicorn while a task
holds (DEPLOY-2) and checks that nothing was left behind: the server's process and its group
are gone and its port can be bound again.  No assertion depends on how long anything took.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgmatrix import spec
from bgmatrix.errors import DeployError
from bgmatrix.plan import store
from bgmatrix.run import deploy, runner
from bgmatrix.site import deployment as site_deployment
from bgmatrix.spec import ROOT
from tests.unit.test_wire import newest_fastapi_headline, port_free, process_gone

# -- labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("effects", "label"), [
    (["start", "released", "end"], "completed"),
    (["start", "cancelled"], "cancelled"),
    (["start", "gate-timeout", "end"], "gave-up"),
    (["start"], "unfinished"),
    ([], "no-task"),
])
def test_disconnect_label(effects, label):
    assert deploy.disconnect_label(effects) == label


@pytest.mark.parametrize(("effects", "exit_seen", "label"), [
    (["start", "released", "end"], "after-task", "finished"),
    (["start", "cancelled"], "before-task-ended", "cancelled"),
    (["start"], "before-task-ended", "killed"),  # the process ended, the task held, unsaid
    (["start", "released"], "before-task-ended", "killed"),
    (["start", "gate-timeout", "end"], "after-task", "gave-up"),
    (["start"], "did-not-exit", "did-not-exit"),
    ([], "before-task-ended", "no-task"),
])
def test_shutdown_label(effects, exit_seen, label):
    assert deploy.shutdown_label(effects, exit_seen) == label


@pytest.mark.parametrize(("exited", "effects", "fact"), [
    (True, ["start"], "before-task-ended"),
    (True, ["start", "cancelled"], "before-task-ended"),
    (True, ["start", "released", "end"], "after-task"),
    (True, ["start", "released"], "before-task-ended"),
    (False, ["start", "released", "end"], "did-not-exit"),
])
def test_exit_fact_is_coarse(exited, effects, fact):
    assert deploy.exit_fact(exited, effects) == fact


@pytest.mark.parametrize(("order", "label"), [
    (["start", "released", "end", "app-returned", "handler-returned"], "ran-before-return"),
    (["start", "handler-returned", "released", "end"], "returned-before-task-ended"),
    (["start", "handler-returned"], "returned-before-task-ended"),
    (["start", "cancelled", "handler-returned"], "cancelled"),
    (["app-returned", "handler-returned"], "no-task"),
    (["start", "released", "end"], "handler-failed"),
])
def test_serverless_label(order, label):
    assert deploy.serverless_label(order) == label


def test_verdicts_follow_each_clause():
    assert deploy.verdict("DEPLOY-2", "finished") == "conforms"
    assert deploy.verdict("DEPLOY-2", "killed") == "deviates"
    assert deploy.verdict("DEPLOY-3", "killed") == "conforms"  # the bound was kept
    assert deploy.verdict("DEPLOY-3", "finished") == "deviates"
    assert deploy.verdict("DEPLOY-3", "n/a") == "n/a"


def test_every_scenario_names_a_clause_of_the_chapter():
    assert {c.id for c in spec.measured_apart()} == set(deploy.CLAUSES.values())
    assert set(deploy.MEETS) == set(deploy.CLAUSES.values())
    assert set(site_deployment.SCENARIOS) == set(deploy.CLAUSES)
    assert not set(deploy.CLAUSES.values()) & set(spec.by_id())  # never graded per cell


# -- the record --------------------------------------------------------------------------------


def run_of(label_by_scenario, version="1.0"):
    return {"state": "ok", "message": None, "version": version,
            "graceful": {"option": "x", "default": None},
            "scenarios": {s: {"clause": deploy.CLAUSES[s], "label": label,
                              "verdict": deploy.verdict(deploy.CLAUSES[s], label),
                              "evidence": {"effects": ["start"], "exit": "before-task-ended"}}
                          for s, label in label_by_scenario.items()}}


def synthetic_record():
    cell = {"id": "fa-9.9.9_st-9.9.9_py3.11", "fastapi": "9.9.9", "starlette": "9.9.9",
            "python": "3.11", "cutoff": "2030-01-01T00:00:00Z"}
    entry = {"cell": cell,
             "servers": {"alpha": run_of({"disconnect": "completed", "sigterm": "finished",
                                          "sigterm-graceful": "cancelled"}),
                         "beta": run_of({"disconnect": "completed", "sigterm": "killed",
                                         "sigterm-graceful": "n/a"})},
             "adapters": {"mangum": run_of({"serverless": "ran-before-return"})}}
    return deploy.record({cell["id"]: entry})


def test_the_record_is_deterministic_and_valid(tmp_path):
    data = synthetic_record()
    path = tmp_path / "deployment.json"
    deploy.write(data, path)
    first = path.read_bytes()
    deploy.write(json.loads(first), path)
    assert path.read_bytes() == first
    assert deploy.load(path) == site_deployment.load(path) == data


def test_a_record_the_schema_refuses_is_never_written(tmp_path):
    data = synthetic_record()
    data["cells"]["fa-9.9.9_st-9.9.9_py3.11"]["servers"]["alpha"]["state"] = "fine"
    with pytest.raises(DeployError, match="deployment record"):
        deploy.write(data, tmp_path / "deployment.json")
    assert not (tmp_path / "deployment.json").exists()


@pytest.mark.parametrize(("content", "says"), [
    (None, "missing"),
    ("{not json", "unreadable deployment record"),
    ('{"cells": {}}', "required property"),
])
def test_a_missing_or_corrupt_record_is_one_line(tmp_path, content, says):
    path = tmp_path / "deployment.json"
    if content is not None:
        path.write_text(content)
    for load in (deploy.load, site_deployment.load):
        with pytest.raises(DeployError) as caught:
            load(path)
        assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_command_refuses_bad_input_in_one_line(tmp_path):
    corrupt = tmp_path / "deployment.json"
    corrupt.write_text("{not json")
    cell = store.load_cells()[0]["id"]
    for args in (["no-such-cell"], [cell, "--out", str(corrupt)]):
        proc = subprocess.run([sys.executable, "-m", "bgmatrix", "deploy", *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert corrupt.read_text() == "{not json"  # nothing written


# -- the site ----------------------------------------------------------------------------------


def test_the_page_has_one_table_per_scenario_with_servers_as_rows():
    text = site_deployment.page(synthetic_record())
    assert text.startswith("# Does my task survive a deploy?")
    for heading, clause, _ in site_deployment.SCENARIOS.values():
        assert f"## {heading}" in text and f"spec/deployment.md#{clause}" in text
    assert text.count("| <code>alpha</code> |") == 3
    assert text.count("| <code>mangum</code> |") == 1
    assert "finished under alpha 1.0 and was lost under beta 1.0" in text
    assert "**Safe pattern.**" in text


def test_the_committed_record_makes_the_page_and_the_home_line():
    data = site_deployment.load()
    assert data["deploy_hash"]  # a re-measure is due when it differs from deploy_hash()
    [line] = [x for x in site_deployment.home_lines() if x.startswith("- **")]
    assert line.startswith("- **Does my task survive a deploy?** On FastAPI ")
    chapter = site_deployment.chapter((spec.SPEC_DIR / "deployment.md").read_text())
    assert chapter.count("*Measured.*") == len(spec.measured_apart())


# -- live --------------------------------------------------------------------------------------


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.live
def test_sigterm_on_uvicorn_in_the_newest_cell_leaves_nothing_behind(tmp_path):
    planned = newest_fastapi_headline()
    python = Path(runner.build_env(planned, tmp_path / "env"))
    started: list[tuple[int, int]] = []
    result = deploy.observe_server(python, planned, "uvicorn", started, scenarios=("sigterm",))
    assert result["state"] == "ok", result["message"]
    seen = result["scenarios"]["sigterm"]
    assert seen["clause"] == "DEPLOY-2"
    assert seen["label"] in {"finished", "cancelled", "killed", "gave-up", "did-not-exit"}
    assert seen["evidence"]["body_complete"] and seen["evidence"]["effects"][0] == "start"
    assert seen["evidence"]["left_processes"] is False
    [(pid, port)] = started
    assert process_gone(pid), f"the server (pid {pid}) is still running"
    assert group_gone(pid), f"a process of the server's group {pid} is still running"
    assert port_free(port), f"port {port} is still bound"
