"""Bad input gets one clear line and exit code 2, and nothing is written."""

import subprocess
import sys

import pytest

from bgmatrix import cli
from bgmatrix.plan import store
from bgmatrix.spec import ROOT


def bgmatrix(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "bgmatrix", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", "fastapi==0.999.0"], "fastapi 0.999.0 is not a planned release"),
        (["run", "starlette==9.9.9"], "starlette 9.9.9 is not a planned release"),
        (["run", "no-such-cell"], "unknown cell 'no-such-cell'"),
        (["run", "--tag", "no-such-tag"], "no cell is tagged 'no-such-tag'"),
        (["run"], "name a cell"),
        (["show", "no-such-cell", "--results", "/nonexistent"], "no result for"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, says, tmp_path):
    before = sorted((ROOT / "results").glob("*.json"))
    proc = bgmatrix(*args)
    assert proc.returncode == 2
    assert says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted((ROOT / "results").glob("*.json")) == before


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "no plan"),
        ('{"schema": 1, "cells": [', "corrupt"),
        ('{"schema": 7, "cells": []}', "not a schema-1 plan"),
        ('{"schema": 1, "cells": [{"tags": []}]}', "malformed cell list"),
    ],
)
def test_a_missing_or_corrupt_plan_is_one_line(tmp_path, content, says):
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(store.PlanFileError, match=says) as err:
        store.load_cells(path)
    assert "\n" not in str(err.value)


def test_selection_by_release_and_tag():
    cells = store.load_cells()
    newest = cells[[c["kind"] for c in cells].index("starlette") - 1]["fastapi"]
    picked = cli.select(cells, [f"fastapi=={newest}"], [])
    assert picked and all(c["fastapi"] == newest for c in picked)
    headline = cli.select(cells, [], ["headline"])
    assert 10 <= len(headline) <= 30
