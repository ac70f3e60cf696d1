"""Host-side tests import the in-cell harness and oracle directly (they are plain modules)."""

import sys
from pathlib import Path

import pytest

SPEC_SUITE = Path(__file__).resolve().parent.parent / "spec"
sys.path.insert(0, str(SPEC_SUITE))


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    """Replace the cell runner by one that returns a valid result at once; list the runs."""
    from bgmatrix.run import runner
    from tests.unit.test_results import sample

    runs: list[str] = []

    def run_cell(c, install=None):
        runs.append(c["id"])
        data = sample(c["id"])
        data["cell"].update({k: c[k] for k in ("fastapi", "starlette", "python", "cutoff")})
        data["provenance"].update(suite_hash=runner.suite_hash())
        return data

    monkeypatch.setattr(runner, "run_cell", run_cell)
    monkeypatch.setattr(runner, "WORK_DIR", tmp_path / "work")
    return runs


@pytest.fixture
def cite_out(capsys):
    """``bgmatrix cite CLAUSE [--cell CELL] --results FOLDER``: asserts it exits 0, returns what it
    printed."""
    from bgmatrix import cli

    def cite(folder, clause="ATTACH-3", cell=None):
        args = ["cite", clause, *(["--cell", cell] if cell else []), "--results", str(folder)]
        assert cli.main(args) == 0
        return capsys.readouterr().out

    return cite
