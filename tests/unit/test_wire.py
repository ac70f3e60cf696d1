"""Wire mode: the comparison of the two evidence sources, its labels, and one live cell.

The live test builds the newest FastAPI headline cell, serves it with the uvicorn of its
cutoff on 127.0.0.1, and checks that every clause got a label and that nothing was left
behind: the server's process is gone and its port can be bound again.
"""

import errno
import os
import socket
import time
from pathlib import Path

import pytest

from bgmatrix.plan import store
from bgmatrix.run import env, runner, wire

# -- disagreements() -----------------------------------------------------------------------


def graded(verdict, label):
    return {"verdict": verdict, "label": label}


def test_identical_sources_do_not_disagree():
    clauses = {
        "EXEC-1": graded("conforms", "file:after-body; response:after-body; stream:after-body"),
        "ATTACH-3": graded("deviates", "drop"),
        "ISO-1": graded("deviates", "1:isolated 2:carried 3:carried; lost"),
    }
    assert wire.disagreements(clauses, clauses) == []


def test_a_different_verdict_is_reported_with_both_sides():
    raw = {"MW-7": graded("conforms", "ran")}
    seen = {"MW-7": graded("deviates", "skipped")}
    assert wire.disagreements(raw, seen) == [{
        "clause": "MW-7",
        "kind": "verdict",
        "cases": [],
        "raw": {"verdict": "conforms", "label": "ran"},
        "wire": {"verdict": "deviates", "label": "skipped"},
    }]


def test_same_verdict_different_case_outcome_is_a_label_disagreement():
    raw = {"EXEC-1": graded("deviates", "response:after-body; stream:before-body")}
    seen = {"EXEC-1": graded("deviates", "response:before-body; stream:before-body")}
    [found] = wire.disagreements(raw, seen)
    assert (found["kind"], found["cases"]) == ("label", ["response"])


def test_case_free_labels_are_compared_as_sets():
    raw = {"ISO-1": graded("deviates", "1:isolated 2:carried 3:carried; lost")}
    same = {"ISO-1": graded("deviates", "lost; 1:isolated 2:carried 3:carried")}
    other = {"ISO-1": graded("deviates", "1:isolated 2:carried 3:carried; carried")}
    assert wire.disagreements(raw, same) == []
    assert [d["kind"] for d in wire.disagreements(raw, other)] == ["label"]


def test_cases_only_one_side_observed_are_not_compared():
    # The raw run graded FileResponse n/a (no aiofiles); the wire run skipped it too.
    raw = {"EXEC-1": graded("conforms", "n/a; response:after-body; stream:after-body")}
    seen = {"EXEC-1": graded("conforms", "response:after-body; stream:after-body")}
    assert wire.disagreements(raw, seen) == []


def test_mw2_wire_modes_are_read_against_the_raw_after_response_mode():
    raw = {"MW-2": graded("conforms", "after-all-bytes:completed; after-response:completed; "
                                      "withheld:completed")}
    agree = {"MW-2": graded("conforms", "close-after-read:completed; keep-open:completed")}
    cancelled = {"MW-2": graded("deviates", "close-after-read:cancelled; keep-open:completed")}
    assert wire.disagreements(raw, agree) == []
    [found] = wire.disagreements(raw, cancelled)
    assert (found["kind"], found["cases"]) == ("verdict", ["close-after-read"])
    # A relay that cancels once the client leaves holding every byte: both sources see it.
    raw_cancels = {"MW-2": graded("deviates", "after-all-bytes:cancelled; "
                                              "after-response:completed; withheld:completed")}
    assert wire.disagreements(raw_cancels, cancelled) == []


def test_mw1_wire_response_case_is_read_against_the_raw_single_case():
    raw = {"MW-1": graded("deviates", "before-body")}
    seen = {"MW-1": graded("deviates", "response:after-body; stream:before-body")}
    [found] = wire.disagreements(raw, seen)
    assert (found["kind"], found["cases"]) == ("label", ["response"])


@pytest.mark.parametrize("raw_verdict, wire_verdict", [
    ("n/a", "conforms"), ("timeout", "conforms"), ("conforms", "timeout"),
    ("harness-error", "deviates"), ("deviates", "n/a"),
])
def test_only_clauses_graded_on_both_sides_are_compared(raw_verdict, wire_verdict):
    raw = {"MW-1": graded(raw_verdict, "before-body")}
    seen = {"MW-1": graded(wire_verdict, "after-body")}
    assert wire.disagreements(raw, seen) == []


def test_a_clause_missing_from_the_raw_result_is_skipped():
    assert wire.disagreements({}, {"MW-1": graded("conforms", "after-body")}) == []


# -- labels from the wire's observations ------------------------------------------------------


@pytest.mark.parametrize("complete, effects, label", [
    (True, ["start", "released", "end"], "after-body"),
    (False, ["start", "released", "end"], "before-body"),  # the body waited for the task
    (True, ["start", "gate-timeout", "end"], "before-body"),  # arrived once the task gave up
    (True, ["start", "cancelled"], "after-body"),  # held, then cancelled: MW-2's business
    (True, [], "no-task"),
    (False, [], "no-body"),
])
def test_gate_label(complete, effects, label):
    assert wire.gate_label(wire.Fetched(status=200, complete=complete), effects) == label


def test_the_effect_log_reads_as_the_harness_event_log():
    """The suite's own completion label, fed the wire's log, tells cancelled from orphaned."""
    completion = wire.suite_module("labels_exec").completion_label
    entry = {"kind": "task", "run": "r", "origin": "r"}
    returned = {"kind": "marker", "name": "app-returned", "run": "r", "origin": "r"}
    log = [dict(entry, name="start"), dict(entry, name="cancelled"), returned]
    orphan = [dict(entry, name="start"), returned, dict(entry, name="cancelled")]
    assert completion(wire.as_events(log), "start", "end", "cancelled") == "cancelled"
    assert completion(wire.as_events(orphan), "start", "end", "cancelled") == "outlived-app"


def log(*names):
    """An effect log of request "r": task effects, and the end of its application call."""
    return [{"kind": "marker" if n == "app-returned" else "task", "name": n, "run": "r",
             "origin": "r"} for n in names]


@pytest.mark.parametrize("entries, fate", [
    (log("start", "released", "end", "app-returned"), "completed"),
    (log("start", "cancelled", "app-returned"), "cancelled"),
    # The relay returned while its task held; uvicorn's loop let the orphan finish.
    (log("start", "app-returned", "released", "end"), "outlived-app"),
    (log("start", "app-returned"), "unfinished"),
    (log("app-returned"), "not-started"),
])
def test_task_fate(entries, fate):
    assert wire.task_fate(entries) == fate


def test_the_wire_grades_with_the_suites_own_vocabulary():
    from bgmatrix import vocabulary

    assert wire.disagreements is vocabulary.disagreements
    assert vocabulary.grade("ATTACH-3", "warn")[0] == "conforms"
    assert vocabulary.grade("ATTACH-3", "drop")[0] == "deviates"
    assert vocabulary.grade("ATTACH-6", "ran")[0] == "conforms"


def test_label_parts_tell_cases_from_numbered_labels():
    cases, bare = wire.label_parts("n/a; stream:ran; 1:isolated 2:carried")
    assert cases == {"stream": "ran"}
    assert bare == {"1:isolated 2:carried"}


def test_an_interpreter_that_is_not_there_is_a_recorded_state(tmp_path):
    planned = next(c for c in store.load_cells() if c["kind"] == "fastapi")
    result = wire.observe(tmp_path / "no-python", planned)
    assert result["state"] == "wire-unavailable"
    assert result["message"]
    assert result["clauses"] == {}
    assert result["wire_hash"] == wire.wire_hash()


# -- one live cell -----------------------------------------------------------------------------


def newest_fastapi_headline() -> dict:
    from packaging.version import Version

    headline = [c for c in store.load_cells()
                if c["kind"] == "fastapi" and "headline" in c["tags"]]
    return max(headline, key=lambda c: Version(c["fastapi"]))


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def port_free(port: int) -> bool:
    """Nothing listens on ``port``: a fresh listener can take it.

    SO_REUSEADDR lets the bind ignore connections still in TIME_WAIT (the kernel keeps those
    after the server closed them); it never lets two sockets listen on one port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        sock.close()
    return True


@pytest.mark.live
def test_newest_fastapi_cell_over_the_wire_leaves_nothing_behind(tmp_path):
    planned = newest_fastapi_headline()
    python = runner.build_env(planned, tmp_path / "env")
    servers: list[tuple[int, int]] = []
    started = time.monotonic()
    result = wire.observe(Path(python), planned, servers=servers)
    took = time.monotonic() - started

    assert result["state"] == "ok", result["message"]
    assert result["uvicorn"]
    assert result["server"]["framework"] == "fastapi"
    assert set(result["clauses"]) == set(wire.CLAUSES)
    for clause, entry in result["clauses"].items():
        assert entry["verdict"] in ("conforms", "deviates"), (clause, entry)
        assert entry["label"] and entry["label"] != "n/a", (clause, entry)
        assert isinstance(entry["evidence"], dict) and entry["evidence"], (clause, entry)
    # Every response kind of EXEC-1 was observed, each with its own outcome.
    cases, _ = wire.label_parts(result["clauses"]["EXEC-1"]["label"])
    assert set(cases) == {"response", "stream", "file"}

    [(pid, port)] = servers
    assert process_gone(pid), f"the server (pid {pid}) is still running"
    assert port_free(port), f"port {port} is still bound"
    print(f"wire mode took {took:.1f} s (install included)")  # measured, never asserted


def test_the_distributions_a_server_installed_are_read_from_its_folder(tmp_path):
    for name in ("hypercorn-0.18.0.dist-info", "typing_extensions-4.12.2.dist-info",
                 "h11-0.16.0.dist-info"):
        (tmp_path / name).mkdir()
    (tmp_path / "hypercorn").mkdir()  # a package, not a distribution
    assert wire._distributions(tmp_path) == {
        "h11": "0.16.0", "hypercorn": "0.18.0", "typing-extensions": "4.12.2"}


def test_a_server_that_cannot_install_is_a_recorded_state_with_its_name(tmp_path):
    planned = next(c for c in store.load_cells() if c["kind"] == "fastapi")
    result = wire.observe(tmp_path / "no-python", planned, name="daphne")
    assert result["state"] == "wire-unavailable" and "daphne" in result["message"]
    assert result["version"] is None and result["clauses"] == {}
    assert "uvicorn" not in result and "wire_hash" not in result  # the section's hash covers it


@pytest.mark.live
def test_every_other_server_serves_the_newest_cell_and_leaves_nothing_behind(tmp_path):
    planned = newest_fastapi_headline()
    python = runner.build_env(planned, tmp_path / "env")
    before = env.freeze(Path(python))
    servers: list[tuple[int, int]] = []
    section = wire.observe_servers(Path(python), planned, servers=servers)
    assert section["servers_hash"] == wire.wire_hash()
    assert list(section["runs"]) == list(wire.OTHER_SERVERS)
    for name, result in section["runs"].items():
        assert result["state"] == "ok", (name, result["message"])
        assert result["version"] and result["server"]["framework"] == "fastapi", name
        assert set(result["clauses"]) == set(wire.CLAUSES), name
        for clause, entry in result["clauses"].items():
            assert entry["verdict"] in ("conforms", "deviates"), (name, clause, entry)
    assert env.freeze(Path(python)) == before  # each server lived in a folder of its own
    assert len(servers) == len(wire.OTHER_SERVERS)
    for name, (pid, port) in zip(section["runs"], servers):
        assert process_gone(pid), f"{name} (pid {pid}) is still running"
        assert port_free(port), f"{name}'s port {port} is still bound"


def test_the_wire_hash_covers_every_suite_module_wire_mode_borrows():
    # A wire section is stale when its method changed; the label functions wire mode borrows
    # from the suite are part of that method, so each must be in the hash.
    import inspect
    import re as re_

    used = set(re_.findall(r'suite_module\("(\w+)"\)', inspect.getsource(wire)))
    assert used and {f"{name}.py" for name in used} <= set(wire.BORROWED)
