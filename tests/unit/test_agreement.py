"""Agreement between raw-ASGI and wire evidence (bgmatrix/agreement.py), the server probes that
explain it (bgmatrix/run/probe.py, tests/servers/apps.py) and the committed record."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from bgmatrix import agreement
from bgmatrix.errors import ProbeError, UsageError
from bgmatrix.run import probe

ROOT = Path(__file__).resolve().parents[2]


def case(clause, raw_label, wire_label, facts, *, packages=None, tests=(), clauses=None,
         server="granian", version="1.0", python="3.9"):
    result = {"cell": {"id": "st-x", "python": python}, "provenance": {"packages": packages or {}},
              "tests": list(tests), "clauses": clauses or {}}
    return agreement.Case(clause, server, version, {"verdict": "deviates", "label": raw_label},
                          {"verdict": "deviates", "label": wire_label}, result, facts)


# -- the rules: each holds on its fact, and only on it ----------------------------------------


def test_a_wire_disagreement_is_explained_by_the_schedule_that_reproduces_it():
    raw = ("schedule-dependent (sync/send-yields-0=after-body async/send-yields-0=after-body "
           "async/send-yields-1=before-body)")
    assert agreement.matching_schedules(raw, "response:after-body; stream:after-body") == [
        "async/send-yields-0", "sync/send-yields-0"]
    assert agreement.matching_schedules(raw, "response:no-body") == []
    assert agreement.matching_schedules("before-body", "response:after-body") == []


def test_a_body_delivered_before_the_held_final_message_explains_after_body():
    facts = {"held-final.length": "body-complete", "held-final.chunked": "body-held"}
    found = agreement.explain(case("MW-1", "before-body",
                                   "response:after-body; stream:before-body", facts))
    assert found and found.basis == "held-final.length"
    held = dict(facts, **{"held-final.length": "body-held"})
    assert agreement.explain(case("MW-1", "before-body",
                                  "response:after-body; stream:before-body", held)) is None
    # the stream case must agree too: otherwise the difference is more than framing
    assert agreement.explain(case("MW-1", "before-body",
                                  "response:after-body; stream:after-body", facts)) is None


def test_a_server_where_sniffio_finds_no_loop_explains_every_anyio_failure():
    facts = {"scope.async_library": "AsyncLibraryNotFoundError"}
    found = agreement.explain(case("ATTACH-6", "ran", "none-ran", facts,
                                   packages={"anyio": "3.7.1"}))
    assert found and found.basis == "scope.async_library" and "anyio 3.7.1" in found.text
    assert agreement.explain(case("ATTACH-6", "ran", "none-ran", facts)) is None  # no anyio
    assert agreement.explain(case("ATTACH-6", "ran", "none-ran",
                                  {"scope.async_library": "asyncio"},
                                  packages={"anyio": "3.7.1"})) is None


def test_scope_extensions_explain_the_file_case_only_where_the_raw_run_raised_keyerror():
    raised = [{"clauses": ["EXEC-1"], "observations": {"s": {"app_exception": {
        "type": "KeyError", "message": "'extensions'"}}}}]
    label = "file:no-task; response:after-body"
    found = agreement.explain(case("EXEC-1", label, "file:after-body; response:after-body",
                                   {"scope.extensions": ["http.response.pathsend"]},
                                   tests=raised))
    assert found and "http.response.pathsend" in found.text
    absent = agreement.explain(case("EXEC-1", label, "file:no-body; response:after-body",
                                    {"scope.extensions": None}, tests=raised))
    assert absent and "absent" in absent.text
    assert agreement.explain(case("EXEC-1", label, "file:after-body; response:after-body",
                                  {"scope.extensions": []})) is None  # no KeyError seen


def test_a_disconnect_after_the_final_message_is_the_raw_after_response_case():
    raw = "after-all-bytes:cancelled; after-response:completed; withheld:completed"
    wire = "close-after-read:completed; keep-open:completed"
    found = agreement.explain(case("MW-2", raw, wire, {"close-before-final": "nothing"}))
    assert found and "after-response" in found.text
    assert agreement.explain(case("MW-2", raw, wire,
                                  {"close-before-final": "http.disconnect"})) is None
    assert agreement.explain(case("MW-2", raw.replace("after-response:completed",
                                                      "after-response:cancelled"),
                                  wire, {"close-before-final": "nothing"})) is None


def test_server_protocol_faults_explain_only_their_own_clause():
    request = {"disconnect.close": "http.request", "disconnect.keep-open": "http.request"}
    raw = "after-all-bytes:completed; after-response:completed"
    assert agreement.explain(case("MW-2", raw, "close-after-read:cancelled", request))
    assert agreement.explain(case("MW-1", "before-body", "response:no-body", request)) is None
    raises = {"send-after-close.send": "RuntimeError"}
    found = agreement.explain(case("MW-7", "ran", "skipped", raises))
    assert found and "RuntimeError" in found.text and "server fault" in found.text
    assert agreement.explain(case("MW-7", "ran", "skipped", {"send-after-close.send": "ok"})) \
        is None
    lost = {"cancel-receive": "lost-message"}
    assert agreement.explain(case("EXEC-1", "stream:after-body", "stream:no-task", lost))
    assert agreement.explain(case("EXEC-1", "stream:after-body", "stream:no-task", lost,
                                  python="3.8")) is None
    assert agreement.explain(case("EXEC-1", "stream:no-task", "stream:no-task; file:x",
                                  lost)) is None


def test_a_release_not_probed_or_not_ok_has_no_facts():
    probes = {"releases": {"granian 1.0": {"state": "error", "facts": {"a": "b"}},
                           "granian 2.0": {"state": "ok", "facts": {"a": "b"}}}}
    assert agreement.facts_of(probes, "granian", "1.0") == {}
    assert agreement.facts_of(probes, "granian", "3.0") == {}
    assert agreement.facts_of(None, "granian", "2.0") == {}
    assert agreement.facts_of(probes, "granian", "2.0") == {"a": "b"}


# -- the committed record --------------------------------------------------------------------


def test_every_committed_disagreement_has_a_measured_explanation():
    """Issue 13, item 6: raw and wire agree on every cell that has both, or the difference is
    explained on the clause page by a schedule or a probed server fact."""
    from bgmatrix.site import model

    snapshot = model.load_snapshot(ROOT / "results")
    items = [d for found in snapshot.disagreements.values() for d in found]
    assert items, "the committed results hold disagreements: the check must see them"
    unexplained = sorted({(d.clause, d.server, d.version, d.cell) for d in items
                          if d.explanation is None})
    assert not unexplained, unexplained


def test_the_committed_probe_record_is_valid_and_sorted():
    data = agreement.load_probes()
    assert data is not None
    text = agreement.PROBES_PATH.read_text(encoding="utf-8")
    assert text == probe.dumps(data)  # deterministic: sorted keys, one format
    assert all(key == f"{e['server']} {e['version']}" for key, e in data["releases"].items())


# -- bad input -------------------------------------------------------------------------------


def test_a_corrupt_probe_record_is_one_line_and_left_as_it_was(tmp_path):
    path = tmp_path / "server-probes.json"
    path.write_text('{"format": 1, "releases": ', encoding="utf-8")
    with pytest.raises(ProbeError) as caught:
        agreement.load_probes(path)
    assert str(caught.value).count("\n") == 0 and str(path) in str(caught.value)
    path.write_text('{"format": 2}', encoding="utf-8")
    with pytest.raises(ProbeError):
        agreement.load_probes(path)
    assert path.read_text(encoding="utf-8") == '{"format": 2}'


def test_an_unknown_server_release_is_a_usage_error():
    args = type("A", (), {"releases": ["granian==0.0.0"], "server": None,
                          "missing": False})()
    with pytest.raises(UsageError, match="granian==0.0.0"):
        probe._chosen(args, {"granian 1.0": ("st-x", "granian")}, None)
    args.releases = ["granian"]
    with pytest.raises(UsageError, match="SERVER==VERSION"):
        probe._chosen(args, {"granian 1.0": ("st-x", "granian")}, None)


def test_a_new_probe_run_keeps_the_releases_it_did_not_measure():
    old = {"releases": {"uvicorn 0.1": {"server": "uvicorn"}, "granian 1.0": {"old": True}}}
    merged = probe.record({"granian 1.0": {"new": True}}, old)
    assert merged["releases"] == {"granian 1.0": {"new": True},
                                  "uvicorn 0.1": {"server": "uvicorn"}}
    assert merged["probe_hash"] == probe.probe_hash()


# -- the probe app, driven in process (the real servers are driven by `bgmatrix probe`) -------


@pytest.fixture
def probe_app(tmp_path, monkeypatch):
    monkeypatch.setenv("BGMATRIX_WIRE_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("probe_apps", ROOT / "tests/servers/apps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.GATE_DEADLINE, module.RECEIVE_WAIT = 0.2, 0.2
    return module


def drive(module, path, messages):
    """Call the app once with a receive that yields ``messages`` and then waits forever."""
    sent = []

    async def go():
        queue = list(messages)

        async def receive():
            if queue:
                return queue.pop(0)
            await asyncio.Event().wait()

        async def send(message):
            sent.append(message)

        await module.app({"type": "http", "path": path, "query_string": b"run=r"},
                         receive, send)

    asyncio.run(go())
    facts = {}
    for line in Path(module.FACTS).read_text().splitlines():
        entry = json.loads(line)
        facts[entry["name"]] = entry["value"]
    return facts, sent


def test_the_probe_app_reports_what_receive_gave(probe_app):
    request = {"type": "http.request", "body": b"", "more_body": False}
    facts, sent = drive(probe_app, "/disconnect", [request, {"type": "http.disconnect"}])
    assert facts["disconnect"] == "http.disconnect" and sent[-1]["more_body"] is False
    Path(probe_app.FACTS).unlink()
    facts, _ = drive(probe_app, "/disconnect", [request])
    assert facts["disconnect"] == "nothing"


@pytest.mark.skipif(sys.version_info < (3, 9), reason="Task.cancel(msg) is new in 3.9")
def test_the_probe_app_sees_a_cancellation_message_kept_by_asyncio(probe_app):
    request = {"type": "http.request", "body": b"", "more_body": False}
    facts, _ = drive(probe_app, "/cancel-receive", [request])
    assert facts["cancel-receive"] == "kept-message"


def test_the_probe_app_is_also_an_asgi2_app(probe_app):
    """uvicorn before 0.7 calls ``app(scope)`` and awaits ``instance(receive, send)``."""
    assert asyncio.iscoroutinefunction(probe_app.app)  # how hypercorn tells ASGI from WSGI
    request = {"type": "http.request", "body": b"", "more_body": False}
    sent = []

    async def go():
        async def receive():
            return request

        async def send(message):
            sent.append(message)

        await probe_app.asgi2({"type": "http", "path": "/scope", "query_string": b""})(
            receive, send)

    asyncio.run(go())
    assert sent[0]["type"] == "http.response.start" and json.loads(sent[1]["body"])[
        "async_library"] == "asyncio"
