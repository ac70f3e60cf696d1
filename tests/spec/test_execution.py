"""Execution: when and how the tasks attached to a response run.

spec/execution.md.  Every clause here is at Starlette level: the apps come from webapp.build,
on FastAPI in FastAPI cells and on pure Starlette in Starlette cells, with the tasks on a
Starlette Response's ``background``.  The harness's ordered event log is the evidence.
"""
import asyncio
import functools
import gc
import importlib.util
import inspect
import threading
import time
import warnings

import pytest
import starlette.background
import webapp
from labels_exec import (
    callable_label,
    never_awaited,
    propagation_label,
    sequence_label,
    starts_after_final_body,
)
from oracle import schedule_label, tasks_after_body_label
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse

#: Starlette before 0.9.9 has ``BackgroundTask`` only: the clauses about a collection of tasks
#: are n/a there (found by capability, like every feature).
BackgroundTasks = getattr(starlette.background, "BackgroundTasks", None)
NO_COLLECTION = "release has no starlette.background.BackgroundTasks (BackgroundTask only)"


def has_collection(record):
    if BackgroundTasks is None:
        record.not_applicable(NO_COLLECTION)
        return False
    return True


TIMEOUT = 5.0  # seconds per request: a release that hangs is recorded as a timeout


def socket_run_note():
    """EXEC-1's second run over a real socket needs an ASGI server inside the cell."""
    if importlib.util.find_spec("uvicorn") is None:
        return {"performed": False, "reason": "no ASGI server (uvicorn) importable in this cell"}
    return {"performed": False, "reason": "the socket run is not implemented in the suite yet"}


@pytest.mark.clause("EXEC-1")
@pytest.mark.parametrize("case", webapp.RESPONSE_CASES)
def test_tasks_start_after_final_body(record, harness, tmp_path, case):
    path = webapp.served_file(record, tmp_path, case)
    if path is None:
        return

    outcomes, evidence = {}, {}
    for name, yields, task in webapp.schedules(harness):
        def respond(task=task):
            # The task's effect is its start: it records before doing anything else (the
            # "async-awaits" shape awaits once first, which is the point of that schedule).
            return webapp.response_case(case, BackgroundTask(task), path)

        app = webapp.build(record, {"/": respond})
        ex = evidence[name] = harness.request(app, timeout=TIMEOUT, send_yields=yields)
        outcomes[name] = tasks_after_body_label(ex.events)
    record.observe("schedules", evidence)
    record.observe("socket_run", socket_run_note())
    record.grade("EXEC-1", "%s:%s" % (case, schedule_label(outcomes)),
                 graded=list(outcomes.values()))


@pytest.mark.clause("EXEC-2")
def test_tasks_run_one_at_a_time_in_order(record, harness):
    if not has_collection(record):
        return
    async def async_step(name):
        harness.effect("start-" + name)
        for _ in range(3):  # hand the loop to anything that runs concurrently
            await asyncio.sleep(0)
        harness.effect("end-" + name)

    def sync_step(name):
        harness.effect("start-" + name)
        # A window in which a concurrent runner would start the next task; the order of a
        # sequential runner does not depend on it.
        time.sleep(0.01)
        harness.effect("end-" + name)

    def respond():
        tasks = BackgroundTasks()
        tasks.add_task(async_step, "1")
        tasks.add_task(sync_step, "2")
        tasks.add_task(async_step, "3")
        return PlainTextResponse("x", background=tasks)

    app = webapp.build(record, {"/": respond})
    ex = record.observe("request", harness.request(app, timeout=TIMEOUT))
    label = sequence_label(ex.effects, ["1", "2", "3"])
    record.grade("EXEC-2", label)


CALLABLE_KINDS = ("sync", "async", "partial", "callable")


def make_callable(kind, mark):
    """One background callable of ``kind`` that calls ``mark(kind)`` when it really runs.

    Returns the callable and the code object its coroutines run (None for the sync one).
    """
    if kind == "sync":

        def task():
            mark(kind)

        return task, None
    if kind == "async":

        async def task():
            mark(kind)

        return task, task.__code__
    if kind == "partial":

        async def target(name):
            mark(name)

        return functools.partial(target, kind), target.__code__

    class AsyncCallable(object):
        async def __call__(self):
            mark(kind)

    return AsyncCallable(), AsyncCallable.__call__.__code__


def unstarted_coroutines(code):
    """Live coroutines of ``code`` that were created and never started.

    Direct evidence of a coroutine that nobody awaited, even where the RuntimeWarning comes
    only later: a thread pool's idle worker can keep the coroutine referenced for seconds.
    """
    if code is None:
        return []
    return [
        o for o in gc.get_objects()
        if inspect.iscoroutine(o) and o.cr_code is code
        and inspect.getcoroutinestate(o) == inspect.CORO_CREATED
    ]


@pytest.mark.clause("EXEC-3")
@pytest.mark.parametrize("kind", CALLABLE_KINDS)
def test_every_kind_of_callable_runs(record, harness, kind):
    threads = {}

    def mark(name):
        threads[name] = threading.get_ident()
        harness.effect(name)

    func, code = make_callable(kind, mark)

    def respond():
        threads["loop"] = threading.get_ident()  # the endpoint runs on the event loop's thread
        return PlainTextResponse("x", background=BackgroundTask(func))

    app = webapp.build(record, {"/": respond})
    # The RuntimeWarning for an un-awaited coroutine is issued when the coroutine is collected,
    # which can be after the harness's own capture (when the request's loop closes).
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        ex = record.observe("request", harness.request(app, timeout=TIMEOUT))
        unstarted = len(unstarted_coroutines(code))
        gc.collect()
    seen = ex.warnings + [
        {"category": w.category.__name__, "message": str(w.message)} for w in after
    ]
    ran = kind in ex.effects
    on_loop = threads.get(kind) == threads.get("loop")
    record.observe("ran_on_loop_thread", on_loop if ran else None)
    record.observe("never_awaited_warnings", never_awaited(seen))
    record.observe("unstarted_coroutines", unstarted)
    label = callable_label(ran, kind != "sync", on_loop, unstarted, seen)
    record.grade("EXEC-3", "%s:%s" % (kind, label), graded=label)


MARKER = "second task failed"


@pytest.mark.clause("EXEC-4", "EXEC-5")
@pytest.mark.parametrize("variant", ("default", "handler"))
def test_task_exception(record, harness, variant):
    """EXEC-4 and EXEC-5 on one app: with Starlette's default error handling, and with a
    custom handler for ``Exception`` (which Starlette gives to ServerErrorMiddleware)."""
    if not has_collection(record):
        return

    async def failing():
        harness.effect("second")
        raise RuntimeError(MARKER)

    def respond():
        tasks = BackgroundTasks()
        tasks.add_task(harness.sync_task("first"))
        tasks.add_task(failing)
        tasks.add_task(harness.sync_task("third"))
        return PlainTextResponse("x", background=tasks)

    async def on_error(request, exc):
        harness.effect("handler")
        return PlainTextResponse("handled", status_code=500)

    handlers = [(Exception, on_error)] if variant == "handler" else []
    probe = webapp.ExceptionProbe(webapp.build(record, {"/": respond}, exception_handlers=handlers))
    # A client that stays connected ("never"): a second http.response.start then reaches the
    # log with its status instead of being dropped as a send to a closed connection.
    ex = record.observe("request", harness.request(probe, disconnect="never", timeout=TIMEOUT))
    record.observe("left_app", probe.seen)
    record.observe("handler_called", "handler" in ex.effects)
    label = propagation_label(probe.seen, "RuntimeError", MARKER)
    later = "later-ran" if "third" in ex.effects else "later-skipped"
    record.grade("EXEC-4", "%s:%s+%s" % (variant, label, later), graded=label)
    second = record.observe("starts_after_final_body", starts_after_final_body(ex.events))
    label = "second-start" if second else "no-second-start"
    record.grade("EXEC-5", "%s:%s" % (variant, label), graded=label)


@pytest.mark.clause("EXEC-6")
def test_task_added_while_tasks_run(record, harness):
    if not has_collection(record):
        return
    refused = []

    def respond():
        tasks = BackgroundTasks()

        def first():
            harness.effect("first")
            try:
                tasks.add_task(harness.sync_task("added"))
            except Exception as exc:  # refusing is one of the two conforming outcomes
                refused.append(webapp.describe_exception(exc))

        tasks.add_task(first)
        return PlainTextResponse("x", background=tasks)

    app = webapp.build(record, {"/": respond})
    ex = record.observe("request", harness.request(app, timeout=TIMEOUT))
    record.observe("add_task_raised", refused)
    if "added" in ex.effects:
        label = "ran"
    else:
        label = "rejected" if refused else "ignored"
    record.grade("EXEC-6", label)
