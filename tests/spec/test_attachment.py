"""Attachment: which tasks run when FastAPI connects the injected BackgroundTasks to a response.

spec/attachment.md.  Each test builds a small FastAPI app whose tasks record effects into the
harness log, drives one request over raw ASGI and grades the clauses it names.
"""
import pytest
from kind import require_fastapi
from oracle import conflict_label, qualifying_signals, runs_label

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, Depends, FastAPI  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.background import BackgroundTasks as StarletteTasks  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402


def grade_conflict(record, clause, exchange, injected, own):
    label = conflict_label(exchange.effects, injected, own, exchange.warnings)
    record.grade(clause, label)
    return label


@pytest.mark.clause("ATTACH-1")
def test_returned_data_runs_injected_tasks(record, harness):
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return {"ok": True}

    ex = record.observe("request", harness.request(app))
    label = runs_label(ex.effects, ["injected"], ex.warnings)
    record.grade("ATTACH-1", label)


@pytest.mark.clause("ATTACH-2")
def test_response_without_background_runs_injected_tasks(record, harness):
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return PlainTextResponse("own response")

    ex = record.observe("request", harness.request(app))
    label = runs_label(ex.effects, ["injected"], ex.warnings)
    record.grade("ATTACH-2", label)


@pytest.mark.clause("ATTACH-3")
def test_conflict_with_background_task(record, harness):
    """FastAPI #11215 as reported: a BackgroundTask on the Response, tasks on the injected."""
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected-1"))
        tasks.add_task(harness.async_task("injected-2"))
        return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))

    ex = record.observe("request", harness.request(app))
    grade_conflict(record, "ATTACH-3", ex, ["injected-1", "injected-2"], ["own"])


@pytest.mark.clause("ATTACH-4")
def test_conflict_with_background_tasks_built_by_endpoint(record, harness):
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        own = StarletteTasks()
        own.add_task(harness.sync_task("own-1"))
        own.add_task(harness.sync_task("own-2"))
        return PlainTextResponse("x", background=own)

    ex = record.observe("request", harness.request(app))
    grade_conflict(record, "ATTACH-4", ex, ["injected"], ["own-1", "own-2"])


@pytest.mark.clause("ATTACH-5")
def test_explicit_background_none_runs_injected_tasks(record, harness):
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return PlainTextResponse("x", background=None)

    ex = record.observe("request", harness.request(app))
    label = runs_label(ex.effects, ["injected"], ex.warnings)
    record.grade("ATTACH-5", label)


@pytest.mark.clause("ATTACH-6", "RES-2")
def test_identity_runs_each_task_once(record, harness):
    """The documented workaround: return the injected object as the response's background."""
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("a"))
        tasks.add_task(harness.sync_task("b"))
        return PlainTextResponse("x", background=tasks)

    ex = record.observe("request", harness.request(app))
    label = runs_label(ex.effects, ["a", "b"], ex.warnings)
    record.grade("ATTACH-6", label)
    # RES-2 forgives a task that did not run only when a qualifying warning reported it.
    warned = bool(qualifying_signals(ex.warnings))
    record.grade("RES-2", label, graded="warned+" + label if warned else label)


@pytest.mark.clause("ATTACH-7", "RES-3")
def test_declared_but_unused(record, harness):
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))

    ex = record.observe("request", harness.request(app))
    label = runs_label(ex.effects, ["own"], ex.warnings)
    record.grade("ATTACH-7", label)
    warned = bool(qualifying_signals(ex.warnings))
    record.grade("RES-3/declared-but-unused", "false-warning" if warned else "clean")


@pytest.mark.clause("ATTACH-8", "ATTACH-16")
def test_dependency_tasks(record, harness):
    def sub(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("sub"))

    def dep(tasks: BackgroundTasks, _=Depends(sub)):
        tasks.add_task(harness.sync_task("dep"))

    app = FastAPI()

    # Path-operation ``dependencies=[...]`` is newer than 0.10.0; a parameter works everywhere.
    @app.get("/data")
    async def data(_=Depends(dep)):
        return {"ok": True}

    @app.get("/conflict")
    async def conflict(_=Depends(dep)):
        return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))

    data_ex = record.observe("data", harness.request(app, path="/data"))
    conflict_ex = record.observe("conflict", harness.request(app, path="/conflict"))
    data_label = runs_label(data_ex.effects, ["sub", "dep"], data_ex.warnings)
    record.grade("ATTACH-8", data_label)
    grade_conflict(record, "ATTACH-16", conflict_ex, ["sub", "dep"], ["own"])
