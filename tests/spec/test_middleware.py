"""Middleware: background tasks under BaseHTTPMiddleware, GZipMiddleware and a pure ASGI
middleware, and after client disconnects.

spec/middleware.md.  Every clause here is at Starlette level: the apps come from webapp.build,
on FastAPI in FastAPI cells and on pure Starlette in Starlette cells.  "The client" is the
harness: a message reached the client when the harness's ``send`` (the outermost one) got it.
Some releases hang in these scenarios (a relay waiting for a message that never comes), so
every request has a short budget and a hang is recorded as a ``timeout``.
"""
import asyncio
import os

import pytest
import webapp
from labels_exec import completion_label, propagation_label, ran_label
from oracle import first_index, is_final_body, schedule_label, tasks_after_body_label
from starlette.background import BackgroundTask

try:  # Starlette before 0.6.2 has neither; the clauses about them are n/a there
    from starlette.middleware.base import BaseHTTPMiddleware
except ImportError:
    BaseHTTPMiddleware = None
try:
    from starlette.middleware.gzip import GZipMiddleware
except ImportError:
    GZipMiddleware = None
from starlette.responses import PlainTextResponse, StreamingResponse

TIMEOUT = 5.0  # seconds per request: a hang becomes a recorded timeout, not a stalled run


def has(record, feature, name):
    """Grade the test's clauses n/a when the release lacks ``feature`` (found by import)."""
    if feature is None:
        record.not_applicable("release has no %s" % name)
        return False
    return True


if BaseHTTPMiddleware is not None:
    class PassThrough(BaseHTTPMiddleware):
        """The most common BaseHTTPMiddleware: ``dispatch`` returns what ``call_next`` gave."""

        async def dispatch(self, request, call_next):
            return await call_next(request)


def with_base_http(record, respond):
    return webapp.build(record, {"/": respond}, middleware=[(PassThrough, {})])


@pytest.mark.clause("MW-1")
def test_base_http_delivers_body_before_tasks(record, harness):
    if not has(record, BaseHTTPMiddleware, "starlette.middleware.base.BaseHTTPMiddleware"):
        return
    outcomes, evidence = {}, {}
    for name, yields, task in webapp.schedules(harness):
        def respond(task=task):
            return PlainTextResponse("inner body", background=BackgroundTask(task))

        ex = evidence[name] = harness.request(with_base_http(record, respond),
                                              timeout=TIMEOUT, send_yields=yields)
        outcomes[name] = tasks_after_body_label(ex.events)
    record.observe("schedules", evidence)
    record.grade("MW-1", schedule_label(outcomes), graded=list(outcomes.values()))


# MW-2's ways a request ends, in ASGI terms.  "The connection closes normally": the client
# keeps the connection open while the application runs and the server reports nothing, so
# ``receive`` blocks until the application returns (disconnect mode "never": the disconnect is
# withheld until the task has ended, because the task ends inside the application call).
# "The client disconnects after the response": ``receive`` answers ``http.disconnect`` as soon
# as the final body message was sent (mode "after-response", which is also what uvicorn tells
# an application once the response is complete).  A release whose middleware waits for a
# disconnect that never comes hangs in the first mode: that is recorded as a timeout.
# A third case goes beyond the spec's text: the client disconnects once it holds every byte of
# the body.  A relay may pass the inner body on at once but send the final (empty) body message
# only after the inner tasks end, so a client that has the whole response (by Content-Length)
# can leave before the final message.  The inner body is one message, so "after-first-body" is
# exactly that moment; the test checks it against Content-Length.
DISCONNECTS = {
    "withheld": "never",
    "after-response": "after-response",
    "after-all-bytes": "after-first-body",
}
YIELDS = 20  # times the task hands the loop back: enough for a relay to cancel it mid-way


@pytest.mark.clause("MW-2")
@pytest.mark.parametrize("mode", sorted(DISCONNECTS))
def test_base_http_does_not_cancel_tasks(record, harness, mode):
    if not has(record, BaseHTTPMiddleware, "starlette.middleware.base.BaseHTTPMiddleware"):
        return
    async def slow():
        harness.effect("start")
        try:
            for _ in range(YIELDS):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            harness.effect("cancelled")
            raise
        harness.effect("end")

    def respond():
        return PlainTextResponse("inner body", background=BackgroundTask(slow))

    app = with_base_http(record, respond)
    ex = record.observe("request", harness.request(app, disconnect=DISCONNECTS[mode],
                                                   timeout=TIMEOUT))
    if mode == "after-all-bytes":
        bodies = [e for e in ex.events
                  if e["kind"] == "send" and e.get("message") == "http.response.body"]
        complete = bool(bodies) and ex.header("content-length") == [str(bodies[0]["size"])]
        record.observe("first_body_has_all_bytes", complete)
        if not complete:
            record.not_applicable("the first body message did not carry the whole body")
            return
    label = completion_label(ex.events, "start", "end", "cancelled")
    record.grade("MW-2", "%s:%s" % (mode, label), graded=label)


MARKER = "inner task failed"


@pytest.mark.clause("MW-3")
def test_base_http_does_not_swallow_task_errors(record, harness):
    if not has(record, BaseHTTPMiddleware, "starlette.middleware.base.BaseHTTPMiddleware"):
        return
    outcomes, evidence = {}, {}
    for name, yields, task in webapp.schedules(harness, fail_with=MARKER):
        def respond(task=task):
            return PlainTextResponse("inner body", background=BackgroundTask(task))

        probe = webapp.ExceptionProbe(with_base_http(record, respond))
        ex = harness.request(probe, timeout=TIMEOUT, send_yields=yields)
        evidence[name] = {"request": ex, "left_app": probe.seen, "task_ran": "task" in ex.effects}
        outcomes[name] = propagation_label(probe.seen, "RuntimeError", MARKER)
    record.observe("schedules", evidence)
    record.grade("MW-3", schedule_label(outcomes), graded=list(outcomes.values()))


@pytest.mark.clause("MW-4")
@pytest.mark.parametrize("variant", ("set-on-call-next-response", "new-response"))
def test_background_set_in_dispatch(record, harness, variant):
    if not has(record, BaseHTTPMiddleware, "starlette.middleware.base.BaseHTTPMiddleware"):
        return
    class SetsBackground(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            response = await call_next(request)
            task = BackgroundTask(harness.sync_task("dispatch-task"))
            if variant == "new-response":
                return PlainTextResponse("from dispatch", background=task)
            response.background = task
            return response

    def respond():
        return PlainTextResponse("inner body")

    app = webapp.build(record, {"/": respond}, middleware=[(SetsBackground, {})])
    ex = record.observe("request", harness.request(app, timeout=TIMEOUT))
    label = ran_label(ex.effects, "dispatch-task", missing="ignored")
    if label == "ran" and tasks_after_body_label(ex.events) != "after-body":
        label = "ran-before-body"  # it ran, but not "after that response has been sent"
    record.grade("MW-4", "%s:%s" % (variant, label), graded=label)


@pytest.mark.clause("MW-5")
@pytest.mark.parametrize("case", ("response", "stream"))
def test_gzip_sends_last_chunk_before_tasks(record, harness, case):
    if not has(record, GZipMiddleware, "starlette.middleware.gzip.GZipMiddleware"):
        return
    outcomes, evidence, compressed = {}, {}, set()
    for name, yields, task in webapp.schedules(harness):
        def respond(task=task):
            if case == "response":
                return PlainTextResponse("x" * 1000, background=BackgroundTask(task))
            return StreamingResponse(webapp.chunks(3, size=400), media_type="text/plain",
                                     background=BackgroundTask(task))

        # Both bodies are well above the threshold, so the middleware compresses and buffers.
        app = webapp.build(record, {"/": respond},
                           middleware=[(GZipMiddleware, {"minimum_size": 100})])
        ex = evidence[name] = harness.request(app, headers=[("accept-encoding", "gzip")],
                                              timeout=TIMEOUT, send_yields=yields)
        compressed.add(ex.header("content-encoding") == ["gzip"])
        outcomes[name] = tasks_after_body_label(ex.events)
    record.observe("schedules", evidence)
    record.observe("compressed", sorted(compressed))
    record.grade("MW-5", "%s:%s" % (case, schedule_label(outcomes)),
                 graded=list(outcomes.values()))


@pytest.mark.clause("MW-6")
@pytest.mark.parametrize("case", webapp.RESPONSE_CASES)
def test_pure_asgi_middleware_preserves_order(record, harness, tmp_path, case):
    path = webapp.served_file(record, tmp_path, case)
    if path is None:
        return

    outcomes, evidence = {}, {}
    for name, yields, task in webapp.schedules(harness):
        def respond(task=task):
            return webapp.response_case(case, BackgroundTask(task), path)

        app = webapp.build(record, {"/": respond},
                           middleware=[(webapp.RelayMiddleware, {"harness": harness})])
        ex = evidence[name] = harness.request(app, timeout=TIMEOUT, send_yields=yields)
        outcomes[name] = tasks_after_body_label(ex.events)
    record.observe("schedules", evidence)
    record.grade("MW-6", "%s:%s" % (case, schedule_label(outcomes)),
                 graded=list(outcomes.values()))


def disconnect_mid_body(record, harness, case, tmp_path, spec_version):
    """MW-7 to MW-9: the client goes away after the first body message.

    Returns the exchange, or None when the release cannot build the response (n/a recorded).
    The task deletes the served file, as the background of a FileResponse commonly does.
    """
    path = webapp.served_file(record, tmp_path, case)
    if path is None:
        return None

    def cleanup():
        harness.effect("background")
        os.remove(path)

    def respond():
        return webapp.response_case(case, BackgroundTask(cleanup), path)

    probe = webapp.ExceptionProbe(webapp.build(record, {"/": respond}))
    ex = record.observe("request", harness.request(
        probe, disconnect="after-first-body", spec_version=spec_version, timeout=TIMEOUT))
    record.observe("left_app", probe.seen)
    record.observe("file_exists_after", os.path.exists(path))
    # Under "2.4" the OSError path is exercised only if the app sent after the disconnect;
    # a release that noticed the disconnect through ``receive`` first never meets it.
    record.observe("sends_failed", len([e for e in ex.events if e["kind"] == "send-failed"]))
    # The scenario is only meaningful if the disconnect really came mid-body.
    record.observe("final_body_reached_client", first_index(ex.events, is_final_body) is not None)
    return ex


@pytest.mark.clause("MW-7")
def test_streaming_background_after_disconnect(record, harness, tmp_path):
    ex = disconnect_mid_body(record, harness, "stream", tmp_path, "2.3")
    label = ran_label(ex.effects, "background")
    record.grade("MW-7", label)


@pytest.mark.clause("MW-8")
def test_file_background_after_disconnect(record, harness, tmp_path):
    ex = disconnect_mid_body(record, harness, "file", tmp_path, "2.3")
    if ex is None:
        return
    label = ran_label(ex.effects, "background")
    record.grade("MW-8", label)


@pytest.mark.clause("MW-9")
@pytest.mark.parametrize("case", ("stream", "file"))
def test_background_after_oserror_send(record, harness, tmp_path, case):
    """ASGI 2.4: the harness's ``send`` raises OSError for every message after the first body."""
    ex = disconnect_mid_body(record, harness, case, tmp_path, "2.4")
    if ex is None:
        return
    label = ran_label(ex.effects, "background")
    record.grade("MW-9", "%s:%s" % (case, label), graded=label)
