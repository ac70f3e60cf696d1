"""Attachment at the other attach sites and endings: ATTACH-9 to ATTACH-15.

spec/attachment.md.  The temporal response, the streams FastAPI builds for generator
endpoints, ``app.frontend()`` groups, WebSocket endpoints and endpoints that raise.  Every
feature is found by capability; a release without it grades the clause n/a.
"""
import importlib
import inspect

import pytest
from kind import require_fastapi
from labels_attach import (
    effects_after_body,
    failed_request_label,
    late_task_label,
    metadata_label,
    runs_all_label,
    stream_task_label,
    temporal_background_label,
    websocket_label,
)

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException  # noqa: E402
from fastapi import routing as fastapi_routing  # noqa: E402
from fastapi.dependencies import models  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.websockets import WebSocket  # noqa: E402


# -- capabilities ----------------------------------------------------------------------------
def has_temporal_response():
    """FastAPI injects ``response: Response`` where its Dependant has a slot for it."""
    return "response_param_name" in inspect.signature(models.Dependant).parameters


def streams_generators():
    """FastAPI builds the stream itself where a generator route knows whether it is JSON Lines."""

    def probe():
        yield b""

    return hasattr(fastapi_routing.APIRoute("/probe", probe), "is_json_stream")


def event_source_response():
    try:
        return importlib.import_module("fastapi.sse").EventSourceResponse
    except (ImportError, AttributeError):
        return None


def failure_text(exc):
    return "%s: %s" % (type(exc).__name__, exc)


# -- ATTACH-9 / ATTACH-10: the temporal response ---------------------------------------------
@pytest.mark.clause("ATTACH-9")
def test_background_set_on_temporal_response(record, harness):
    if not has_temporal_response():
        record.not_applicable("release has no temporal `response: Response` parameter")
        return
    app = FastAPI()

    @app.get("/alone")
    async def alone(response: Response):
        response.background = BackgroundTask(harness.sync_task("temporal"))
        return {"ok": True}

    @app.get("/with-injected")
    async def with_injected(response: Response, tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        response.background = BackgroundTask(harness.sync_task("temporal"))
        return {"ok": True}

    alone_ex = record.observe("alone", harness.request(app, path="/alone"))
    both_ex = record.observe("with-injected", harness.request(app, path="/with-injected"))
    labels = [
        temporal_background_label(alone_ex.effects, "temporal", alone_ex.warnings),
        temporal_background_label(both_ex.effects, "temporal", both_ex.warnings),
    ]
    # Honouring the temporal task by dropping the injected one would be a loss of its own:
    # keep it visible in the label (ATTACH-1 grades the injected task).
    injected = "" if "injected" in both_ex.effects else ",injected-lost"
    record.grade(
        "ATTACH-9",
        "alone:%s with-injected:%s%s" % (labels[0], labels[1], injected),
        graded=labels,
    )


@pytest.mark.clause("ATTACH-10")
def test_temporal_metadata_with_returned_response(record, harness):
    if not has_temporal_response():
        record.not_applicable("release has no temporal `response: Response` parameter")
        return
    app = FastAPI()

    # Two of each, so that a release keeping only some of them shows as partly-applied.
    @app.get("/")
    async def endpoint(response: Response):
        response.headers["X-Temporal-A"] = "a"
        response.headers["X-Temporal-B"] = "b"
        response.set_cookie("temporal_a", "1")
        response.set_cookie("temporal_b", "2")
        response.status_code = 201
        return JSONResponse({"own": True})

    ex = record.observe("request", harness.request(app))
    sent_headers = [(k.lower(), v) for k, v in ex.headers]
    sent_cookies = [c.split("=", 1)[0].strip() for c in ex.header("set-cookie")]
    aspects = [
        ("headers", metadata_label(
            [("x-temporal-a", "a"), ("x-temporal-b", "b")], sent_headers, ex.warnings)),
        ("cookies", metadata_label(["temporal_a", "temporal_b"], sent_cookies, ex.warnings)),
        ("status", metadata_label([201], [ex.status], ex.warnings)),
    ]
    record.grade(
        "ATTACH-10",
        " ".join("%s:%s" % aspect for aspect in aspects),
        graded=[label for _, label in aspects],
    )


# -- ATTACH-11 / ATTACH-12: streams FastAPI builds for generator endpoints --------------------
STREAM_KINDS = ("raw", "jsonl", "sse")


def stream_route(kind):
    """(route keyword arguments, one item to yield) for ``kind``, or (None, reason) if absent."""
    if not streams_generators():
        return None, "release does not build streaming responses for generator endpoints"
    if kind == "raw":
        return {"response_class": StreamingResponse}, b"chunk\n"
    if kind == "jsonl":
        return {}, {"item": 1}  # a generator without response_class streams JSON Lines
    sse = event_source_response()
    if sse is None:
        return None, "release has no fastapi.sse.EventSourceResponse"
    return {"response_class": sse}, {"item": 1}


@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.clause("ATTACH-11", "ATTACH-12")
def test_generator_endpoint_stream(record, harness, kind, flavor):
    route_kwargs, item = stream_route(kind)
    if route_kwargs is None:
        record.not_applicable(item)
        return
    add_errors = []  # what add_task raised when called while the stream was being sent

    def add_late(tasks):
        try:
            tasks.add_task(harness.sync_task("late"))
        except Exception as exc:  # a refusal is one of the answers ATTACH-12 accepts
            add_errors.append(failure_text(exc))

    if flavor == "sync":

        def endpoint(tasks: BackgroundTasks):
            tasks.add_task(harness.sync_task("early"))
            yield item
            yield item
            add_late(tasks)

    else:

        async def endpoint(tasks: BackgroundTasks):
            tasks.add_task(harness.sync_task("early"))
            yield item
            yield item
            add_late(tasks)

    app = FastAPI()
    app.add_api_route("/", endpoint, methods=["GET"], **route_kwargs)
    ex = record.observe("request", harness.request(app))
    record.observe("add_task_errors", add_errors)

    label = stream_task_label(ex.events, "early")
    record.grade("ATTACH-11", label)
    label = late_task_label(ex.effects, "late", add_errors)
    record.grade("ATTACH-12", label)


# -- ATTACH-13: app.frontend() route groups --------------------------------------------------
@pytest.mark.clause("ATTACH-13")
def test_frontend_group_runs_dependency_tasks(record, harness, tmp_path):
    if not hasattr(FastAPI, "frontend"):
        record.not_applicable("release has no app.frontend()")
        return
    (tmp_path / "index.html").write_text("<p>frontend-index</p>")
    called = []

    def app_dep(tasks: BackgroundTasks):
        called.append("app")
        tasks.add_task(harness.sync_task("app-dep"))

    def group_dep(tasks: BackgroundTasks):
        called.append("group")
        tasks.add_task(harness.sync_task("group-dep"))

    # The group on the application itself: its dependencies are the application's.
    on_app = FastAPI(dependencies=[Depends(app_dep)])
    on_app.frontend("/", directory=str(tmp_path))
    # A group on a router with its own dependency, included in an app with another one.
    router = fastapi_routing.APIRouter(dependencies=[Depends(group_dep)])
    router.frontend("/", directory=str(tmp_path))
    on_router = FastAPI(dependencies=[Depends(app_dep)])
    on_router.include_router(router)

    cases = [("app", on_app, ["app-dep"]), ("router", on_router, ["app-dep", "group-dep"])]
    labels, graded, evidence = [], [], {}
    for name, app, expected in cases:
        del called[:]
        ex = harness.request(app, path="/", headers=[("accept", "text/html")])
        evidence[name] = {
            "exchange": ex,
            "served": b"frontend-index" in ex.body,
            "dependencies_called": list(called),
        }
        # Counted only once the file is out: the clause says after it has been served.
        label = runs_all_label(effects_after_body(ex.events), expected)
        if not called:
            # No task was ever added: the group skipped the dependencies themselves.
            label += ":dependencies-not-called"
        labels.append("%s:%s" % (name, label))
        graded.append(label)
    record.observe("cases", evidence)
    record.grade("ATTACH-13", " ".join(labels), graded=graded)


# -- ATTACH-14: WebSocket endpoints -----------------------------------------------------------
@pytest.mark.clause("ATTACH-14")
def test_websocket_endpoint_with_background_tasks(record, harness):
    if not hasattr(fastapi_routing, "APIWebSocketRoute"):
        record.not_applicable("release has no FastAPI WebSocket routes with injection")
        return
    entered = []

    async def endpoint(websocket: WebSocket, tasks: BackgroundTasks):
        entered.append(True)
        await websocket.accept()
        tasks.add_task(harness.sync_task("ws-task"))
        await websocket.send_text("hello")
        await websocket.close()

    app = FastAPI()
    definition_error = None
    try:
        app.websocket("/ws")(endpoint)
    except Exception as exc:  # refusing the parameter at definition is an accepted answer
        definition_error = failure_text(exc)
    record.observe("definition_error", definition_error)
    effects, connection_error = [], None
    if definition_error is None:
        ex = record.observe("connection", harness.websocket(app, "/ws"))
        effects, connection_error = ex.effects, ex.app_exception
    record.observe("endpoint_entered", bool(entered))

    label = websocket_label(definition_error, connection_error, bool(entered), effects,
                            "ws-task")
    record.grade("ATTACH-14", label)


# -- ATTACH-15: the endpoint raises ------------------------------------------------------------
@pytest.mark.parametrize("failure", ["http-409", "runtime-error"])
@pytest.mark.clause("ATTACH-15")
def test_endpoint_raising_after_adding_tasks(record, harness, failure):
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("queued"))
        if failure == "http-409":
            # 409, not 418: HTTPStatus(418) is missing on Python 3.8.
            raise HTTPException(status_code=409, detail="conflict")
        raise RuntimeError("endpoint failed after adding a task")

    ex = record.observe("request", harness.request(app))
    record.observe("reached_server", ex.app_exception)
    label = failed_request_label(ex.effects, "queued")
    record.grade("ATTACH-15", label)
