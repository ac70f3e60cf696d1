"""The cell runner on real releases from the package index, and its failure states."""

import json

import pytest

from bgmatrix import results, spec
from bgmatrix.plan import store
from bgmatrix.run import interpreters, runner


def planned(predicate):
    return next(c for c in store.load_cells() if predicate(c))


def test_a_missing_interpreter_is_a_recorded_state():
    fake = dict(planned(lambda c: c["kind"] == "fastapi"), python="3.99", id="fa-x_py3.99")
    result = runner.run_cell(fake)
    assert result["state"] == "no-interpreter"
    assert "no CPython 3.99" in result["message"]
    assert result["clauses"] == {}


@pytest.mark.live
def test_a_release_that_does_not_install_is_a_recorded_state():
    # A cell on an interpreter this machine has: the install is what must fail, not the lookup.
    usable = [c for c in store.load_cells() if c["kind"] == "fastapi"
              and interpreters.find(c["python"])]
    if not usable:
        pytest.skip("no planned FastAPI cell's interpreter is on this machine")
    fake = dict(usable[0], fastapi="0.0.0", id="fa-0.0.0")
    result = runner.run_cell(fake)
    assert result["state"] == "install-error"
    assert "fastapi" in result["message"]
    assert "http" not in result["message"]  # addresses (host names) are redacted


@pytest.mark.live
def test_newest_release_runs_the_whole_suite_twice_with_identical_observations():
    """Live: install the newest FastAPI release and run every spec test in it, twice."""
    newest = planned(lambda c: c["kind"] == "fastapi" and "headline" in c["tags"]
                     and c["python"] == "3.11" and c["fastapi"] == max_fastapi())
    first, second = runner.run_cell(newest), runner.run_cell(newest)
    assert first["state"] == "ok", first["message"]
    results.validate(first, "live")
    graded = first["clauses"]
    assert set(graded) == {c.id for c in spec.load()}
    assert all(v["verdict"] in ("conforms", "deviates", "n/a") for v in graded.values()), {
        k: v for k, v in graded.items() if v["verdict"] not in ("conforms", "deviates", "n/a")}
    assert all(v.get("reason") for v in graded.values() if v["verdict"] == "n/a")
    # Identical to the byte: clock-derived headers and object addresses are recorded in
    # run-independent form by the harness and the tests.
    assert json.dumps(first["tests"]) == json.dumps(second["tests"])


def max_fastapi():
    from packaging.version import Version

    return str(max(Version(c["fastapi"]) for c in store.load_cells() if c.get("fastapi")))
