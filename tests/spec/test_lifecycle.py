"""Lifecycle: background tasks and dependencies with ``yield`` (LIFE-1 to LIFE-4).

spec/lifecycle.md.  A ``yield`` dependency stands for a database session: it opens a stand-in
resource, and its teardown (the code after ``yield``) closes it.  Every step records an effect
in the harness log, so the teardown is placed relative to ``http.response.start``, the final
body message and the tasks by the order of one event log, never by timing.

Releases from before ``yield`` dependencies hand the generator object itself to the endpoint;
that is how the suite finds they lack the feature (by what the endpoint received), and such a
release grades these clauses n/a.
"""
import asyncio
import inspect

import pytest
from kind import require_fastapi
from oracle import schedule_label
from labels_life import (
    function_scope_label,
    resource_label,
    teardown_exception_label,
    teardown_position,
    teardown_task_label,
)

from bgmatrix import vocabulary

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException  # noqa: E402

YIELDED = "yielded-value"  # what the teardown dependencies yield, to see that yield was honoured


class Resource(object):
    """A stand-in for a database session: an ``open`` flag, and effects when it opens and
    when its teardown closes it."""

    def __init__(self, harness):
        self.harness = harness
        self.open = True
        harness.effect("resource-open")

    def close(self):
        self.harness.effect("teardown")
        self.open = False


def resource_dependency(harness, flavor):
    """A ``yield`` dependency providing a :class:`Resource`, as ``async def`` or plain ``def``
    (FastAPI runs the latter in a thread, with its own teardown path)."""
    if flavor == "async":

        async def get_resource():
            resource = Resource(harness)
            try:
                yield resource
            finally:
                resource.close()

    else:

        def get_resource():
            resource = Resource(harness)
            try:
                yield resource
            finally:
                resource.close()

    return get_resource


def resource_app(harness, flavor, flags, received, depends_kwargs=None):
    """The app of LIFE-1 (and, with ``scope="function"``, of LIFE-4): the endpoint passes the
    resource to a task that records its ``open`` flag when it starts and when it ends."""

    async def use_resource(resource):
        flags.append(resource.open)
        harness.effect("task-start")
        # A yield point inside the task: a teardown running concurrently would show as a
        # flag that changed between start and end.
        await asyncio.sleep(0)
        flags.append(resource.open)
        harness.effect("task-end")

    dependency = Depends(resource_dependency(harness, flavor), **(depends_kwargs or {}))
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks, resource=dependency):
        received.append(resource)
        if isinstance(resource, Resource):
            tasks.add_task(use_resource, resource)
        return {"ok": True}

    return app


def yield_unsupported(received, honoured):
    """The reason a release lacks ``yield`` dependencies, or None when it has them.

    ``honoured(value)`` tells whether the endpoint got what the dependency yielded.
    """
    if received and honoured(received[0]):
        return None
    got = type(received[0]).__name__ if received else "nothing"
    return "release does not run yield dependencies: the endpoint received %s" % got


def is_resource(value):
    return isinstance(value, Resource)


def is_yielded(value):
    return isinstance(value, str) and value == YIELDED


def resource_outcomes(record, harness, build, label_of):
    """Run a resource scenario once per ``send`` yield count of the schedule set
    (spec/index.md#schedules) and return ``{schedule: label}``, or None (graded n/a) when the
    release lacks ``yield`` dependencies.

    Only the server's side varies: the task is the scenario's own, which looks at the resource
    on both sides of an ``await``. A teardown that a slow or fast ``send`` lets run earlier or
    later shows up as a schedule whose label differs.
    """
    outcomes, evidence = {}, {}
    for yields in vocabulary.SEND_YIELDS:
        flags, received = [], []
        ex = harness.request(build(flags, received), send_yields=yields)
        reason = yield_unsupported(received, is_resource)
        if reason:
            record.observe("request", ex)
            record.not_applicable(reason)
            return None
        name = "send-yields-%d" % yields
        position = teardown_position(ex.events, "teardown", "task-start")
        evidence[name] = {"request": ex, "flags_seen_by_task": list(flags),
                          "teardown_position": position}
        outcomes[name] = label_of(flags, position)
    record.observe("schedules", evidence)
    return outcomes


@pytest.mark.parametrize("flavor", ["async", "sync"])
@pytest.mark.clause("LIFE-1")
def test_resource_outlives_tasks_by_default(record, harness, flavor):
    outcomes = resource_outcomes(
        record, harness, lambda flags, received: resource_app(harness, flavor, flags, received),
        lambda flags, position: resource_label(flags))
    if outcomes is not None:
        record.grade("LIFE-1", schedule_label(outcomes), graded=list(outcomes.values()))


@pytest.mark.clause("LIFE-2")
def test_task_added_during_teardown(record, harness):
    add_errors = []  # what add_task raised in the teardown, if anything

    async def dependency(tasks: BackgroundTasks):
        yield YIELDED
        harness.effect("teardown")
        try:
            tasks.add_task(harness.sync_task("added-in-teardown"))
        except Exception as exc:  # kept as evidence, then left to reach the server
            add_errors.append("%s: %s" % (type(exc).__name__, exc))
            raise

    received = []
    app = FastAPI()

    @app.get("/")
    async def endpoint(value=Depends(dependency)):
        received.append(value)
        return {"ok": True}

    ex = record.observe("request", harness.request(app))
    reason = yield_unsupported(received, is_yielded)
    if reason:
        record.not_applicable(reason)
        return
    record.observe("add_task_errors", add_errors)
    record.observe("teardown_position",
                   teardown_position(ex.events, "teardown", "added-in-teardown"))
    label = teardown_task_label(ex.effects, "added-in-teardown", ex.app_exception)
    record.grade("LIFE-2", label)


@pytest.mark.clause("LIFE-3", "LIFE-5")
def test_http_exception_in_teardown(record, harness):
    async def dependency():
        yield YIELDED
        harness.effect("teardown")
        # 409, not 418: HTTPStatus(418) is missing on Python 3.8.
        raise HTTPException(status_code=409, detail="commit failed in teardown")

    received = []
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks, value=Depends(dependency)):
        received.append(value)
        tasks.add_task(harness.sync_task("task"))
        return {"ok": True}

    ex = record.observe("request", harness.request(app))
    reason = yield_unsupported(received, is_yielded)
    if reason:
        record.not_applicable(reason)
        return
    position = teardown_position(ex.events, "teardown", "task")
    record.observe("teardown_position", position)
    record.observe("task_ran", "task" in ex.effects)  # recorded alongside, not graded here
    label = teardown_exception_label(ex.status, 409, ex.app_exception)
    # Which requirement applies depends on when the release runs the teardown: before
    # anything was sent the exception has to become the response (LIFE-3); once the response
    # has started it can only propagate to the server (LIFE-5).
    labelled = "%s@%s" % (label, position)
    if position == "before-response":
        record.grade("LIFE-3", labelled, graded=label)
        record.not_applicable("the teardown ran before the response started", ["LIFE-5"])
    else:
        record.grade("LIFE-5", labelled, graded=label)
        record.not_applicable("the teardown ran after the response started (%s)" % position,
                              ["LIFE-3"])


@pytest.mark.parametrize("flavor", ["async", "sync"])
@pytest.mark.clause("LIFE-4")
def test_function_scope_teardown_precedes_response(record, harness, flavor):
    if "scope" not in inspect.signature(fastapi.Depends).parameters:
        record.not_applicable("release has no Depends(scope=...)")
        return
    outcomes = resource_outcomes(
        record, harness,
        lambda flags, received: resource_app(harness, flavor, flags, received,
                                             {"scope": "function"}),
        lambda flags, position: function_scope_label(position))
    if outcomes is not None:
        record.grade("LIFE-4", schedule_label(outcomes), graded=list(outcomes.values()))
