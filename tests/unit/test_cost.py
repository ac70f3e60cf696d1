"""scripts/cost.py: its statistics, its record against schema/cost.schema.json, and one
candidate patched into a copy of the base release's routing.py.  Nothing here is timed."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from bgmatrix import schemas
from bgmatrix.run import candidates

ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("bgmatrix_cost_script",
                                                  ROOT / "scripts" / "cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cost = _load_script()
PATHS = list(cost.PATHS)


def test_quartiles_of_a_sample_and_of_one_value():
    assert cost.quartiles([1, 2, 3, 4, 5]) == {"median": 3, "p25": 2, "p75": 4, "min": 1,
                                               "max": 5}
    assert cost.quartiles([7.0]) == {"median": 7.0, "p25": 7.0, "p75": 7.0, "min": 7.0,
                                     "max": 7.0}
    with pytest.raises(ValueError):
        cost.quartiles([])


def test_median_ci_takes_the_order_statistics_around_the_median():
    # n = 41: ranks floor(21 - 6.27) = 14 and ceil(21 + 6.27) = 28.
    assert cost.median_ci(list(range(41, 0, -1))) == [14.0, 28.0]
    assert cost.median_ci([3.0]) == [3.0, 3.0]
    assert cost.median_ci([1.0, 2.0]) == [1.0, 2.0]  # clamped to the sample
    values = [1.0 + i / 1000 for i in range(201)]
    lo, hi = cost.median_ci(values)
    assert lo < cost.quartiles(values)["median"] < hi


def test_percent_is_rounded_and_never_negative_zero():
    assert cost.percent(1.0934) == 9.3
    assert str(cost.percent(0.99999)) == "0.0"


def test_ratios_are_paired_by_round():
    assert cost.paired_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError):
        cost.paired_ratios([1.0], [1.0, 2.0])


def _times(factor_by_path, rounds=21):
    """Per-request seconds: a base that drifts by round (load), a control equal to it, and
    a candidate that costs ``factor`` times the base in every round."""
    base = [50e-6 * (1 + (r % 5) / 10) for r in range(rounds)]
    return {
        cost.BASE: {p: list(base) for p in PATHS},
        cost.CONTROL: {p: list(base) for p in PATHS},
        "cand": {p: [b * factor_by_path[p] for b in base] for p in PATHS},
    }


def test_summarize_removes_the_drift_that_both_variants_share():
    summary = cost.summarize(_times({"data": 1.0, "response": 1.1, "conflict": 1.02}))
    assert "ratio" not in summary[cost.BASE]["data"]
    assert summary[cost.BASE]["data"]["per_request_us"]["min"] == 50.0
    assert summary[cost.CONTROL]["conflict"]["ratio"]["median"] == 1.0
    response = summary["cand"]["response"]
    assert response["ratio"]["median"] == response["ratio"]["p25"] == 1.1
    assert response["ratio"]["ci95"] == [1.1, 1.1]
    assert response["overhead_percent"] == 10.0
    assert summary["cand"]["conflict"]["overhead_percent"] == 2.0
    assert cost.worst(summary["cand"]) == {"path": "response", "overhead_percent": 10.0,
                                           "ci95_upper_percent": 10.0}


def _behaviour(conflict_ran, warned=False):
    seen = {"status": 200, "warned": False, "logged": False, "own_route_class": True}
    return {"data": {**seen, "ran": ["injected"]}, "response": {**seen, "ran": ["injected"]},
            "conflict": {**seen, "ran": conflict_ran, "warned": warned}}


def test_behaviour_is_checked_against_the_headers_and_unknown_candidates_are_recorded():
    observed = {cost.BASE: _behaviour(["own"]), "recommended": _behaviour(["injected", "own"]),
                "someone-new": _behaviour([])}
    assert cost.check_behaviour(observed) == []
    observed["recommended"] = _behaviour(["own"])  # the patched handler did not run
    observed["warn"] = _behaviour(["own"], warned=False)
    observed[cost.BASE]["data"]["own_route_class"] = False
    problems = cost.check_behaviour(observed)
    assert [p.split(":")[0] for p in problems] == [
        "recommended conflict", "unpatched data", "warn conflict"]


def test_the_record_is_valid_against_its_schema_and_names_the_target():
    base = candidates.Base("0.165.0", "1.10.0", "3.11", "2026-01-01T00:00:00Z", True)
    times = _times({"data": 1.0, "response": 1.01, "conflict": 1.02})
    times["recommended"] = times.pop("cand")
    result = {"times": times, "python": "3.11.7", "implementation": "CPython",
              "observed": {name: _behaviour(["own"]) for name in times}}
    config = {"rounds": 21, "batch": 100, "warmup": 2, "seed": 1, "clock": "cpu"}
    report = cost.record(base, config, result, {"fastapi": "0.165.0"},
                         {"recommended": "0" * 64})
    assert schemas.problem(report, "cost") is None
    assert report["target"] == {"candidate": "recommended", "max_overhead_percent": 3.0,
                                "met": True}
    assert report["command"].endswith("python scripts/cost.py")
    table = cost.table({cost.BASE: report["unpatched"], **{n: c["paths"] for n, c in
                                                          report["candidates"].items()}},
                       [cost.BASE, "recommended"])
    assert "1.020 [1.020-1.020]" in table.splitlines()[-1]


@pytest.mark.skipif(not candidates.sdist_path("0.165.0").is_file() or not shutil.which("patch"),
                    reason="the base release's source distribution is not cached here")
def test_a_candidate_is_patched_into_a_copy_of_routing_py(tmp_path):
    source = cost.sdist_routing(candidates.sdist_path("0.165.0"))
    assert b"def get_request_handler(" in source
    path = cost.routing_file(source, tmp_path / "recommended",
                             candidates.patch_path("recommended"))
    patched = path.read_text(encoding="utf-8")
    assert "def _with_injected_background(" in patched
    compile(patched, str(path), "exec")  # loadable as a module of its own
    unpatched = cost.routing_file(source, tmp_path / "base", None)
    assert unpatched.read_bytes() == source
