"""The committed results hold together: every label agrees with the raw event log beside it.

Re-derives the headline labels (the #11215 conflict, the identity case, declared-but-unused)
from the stored ASGI event log of every committed cell, with the suite's own oracle, and
checks them against the label the cell recorded.
"""

from pathlib import Path

import pytest
from oracle import conflict_label, runs_label

from bgmatrix import evidence, results
from bgmatrix.results import RESULTS_DIR

FILES = [p for p in results.result_paths(RESULTS_DIR) if not p.name.startswith("st-")]
STORE = evidence.Store(RESULTS_DIR)  # one store: each shared event log is read once

#: test -> (clause, how to label its stored exchange)
CHECKS = {
    "test_attachment.py::test_conflict_with_background_task": (
        "ATTACH-3", lambda eff, w: conflict_label(eff, ["injected-1", "injected-2"], ["own"], w)),
    "test_attachment.py::test_identity_runs_each_task_once": (
        "ATTACH-6", lambda eff, w: runs_label(eff, ["a", "b"], w)),
    "test_attachment.py::test_declared_but_unused": (
        "ATTACH-7", lambda eff, w: runs_label(eff, ["own"], w)),
}


def effects_from_log(exchange: dict) -> list[str]:
    """Task effects read from the event log itself, not from the summary beside it."""
    return [e["name"] for e in exchange["events"] if e["kind"] == "effect"]


@pytest.mark.skipif(not FILES, reason="no committed results")
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_labels_agree_with_the_stored_event_log(path: Path):
    result = results.load(path, STORE)  # expanded: every event log, checked against its hash
    if result["state"] != "ok":
        pytest.skip(f"{result['state']}: no verdicts to check")
    checked = 0
    for test in result["tests"]:
        if test["test"] not in CHECKS:
            continue
        clause, label_of = CHECKS[test["test"]]
        exchange = test["observations"]["request"]
        assert effects_from_log(exchange) == exchange["effects"]
        assert test["verdicts"][clause]["label"] == label_of(
            effects_from_log(exchange), exchange["warnings"]), (path.name, clause)
        checked += 1
    assert checked == len(CHECKS), f"{path.name}: only {checked} of {len(CHECKS)} tests found"
