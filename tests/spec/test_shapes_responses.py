"""Shapes: response classes, HEAD and bodiless statuses, replacing middleware, mounted apps and
the ways a BackgroundTasks parameter can be declared.

spec/shapes.md#SHAPE-1 to SHAPE-9.  Each test builds a FastAPI app with one route per case,
drives one request per case over raw ASGI and grades a composite label ``<case>:<label>``.
A case whose feature the release lacks (found by capability, never by version) reads
``<case>:n/a`` and is left out of the verdict; a clause all of whose cases are n/a is n/a.
"""
import inspect

import pytest
from kind import require_fastapi
from oracle import conflict_label, message_of, qualifying_signals, runs_label
from webapp import big_file, chunks, file_response_missing

from bgmatrix import vocabulary

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, FastAPI  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.background import BackgroundTasks as StarletteTasks  # noqa: E402
from starlette.responses import (  # noqa: E402
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

TIMEOUT = 5.0  # seconds per request: a release that hangs is recorded as a timeout
NA = "n/a"


def grade_cases(record, key, labels, reasons=None):
    """Grade ``{case: label}``: n/a cases are shown in the label and left out of the verdict."""
    clause = vocabulary.clause_of(key)
    text = " ".join("%s:%s" % item for item in labels.items())
    if reasons:
        record.observe("not_applicable_cases", reasons)
    graded = [label for label in labels.values() if label != NA]
    if not graded:
        record.not_applicable("no case applies in this release (%s)" % text, [clause])
        return
    record.grade(key, text, graded=graded)


def takes(callable_, name):
    try:
        return name in inspect.signature(callable_).parameters
    except (TypeError, ValueError):
        return False


def failed(ex):
    """The request failed before or inside the endpoint (validation error, server error)."""
    return ex.status is None or ex.status >= 400 or ex.app_exception is not None


def warned_prefix(label, warnings):
    """``warned+<label>`` when a task was missing and a qualifying signal reported it."""
    if label in ("none-ran", "partial") and qualifying_signals(warnings):
        return "warned+" + label
    return label


# -- SHAPE-1 / SHAPE-2: every response class ------------------------------------------------------
class UserJSONResponse(JSONResponse):
    """A user's subclass that changes nothing about background tasks."""


class OwnBackgroundJSONResponse(JSONResponse):
    """A subclass that always sets its own background in ``__init__`` (logging, cleanup)."""

    own = None

    def __init__(self, *args, **kwargs):
        JSONResponse.__init__(self, *args, **kwargs)
        self.background = BackgroundTask(type(self).own)


def optional_class(name):
    """``(class, None)`` for a response class the release ships and can build, else
    ``(None, reason)``: FastAPI's re-export first, then Starlette's."""
    cls = None
    for module in ("fastapi.responses", "starlette.responses"):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name, None)
        except ImportError:
            cls = None
        if cls is not None:
            break
    if cls is None:
        return None, "the release ships no %s" % name
    try:
        cls({"ok": True})
    except Exception as exc:  # the library is absent: an assertion, or None.dumps
        return None, "%s cannot be built in this cell: %s: %s" % (
            name, type(exc).__name__, exc)
    return cls, None


def response_factories(folder):
    """``{case: (factory, reason)}``; ``factory(**kwargs)`` builds a fresh response."""
    path = big_file(folder)
    missing_file = file_response_missing(path)
    orjson, orjson_reason = optional_class("ORJSONResponse")
    ujson, ujson_reason = optional_class("UJSONResponse")
    return {
        "response": (lambda **kw: Response(b"raw", media_type="text/plain", **kw), None),
        "json": (lambda **kw: JSONResponse({"ok": True}, **kw), None),
        "html": (lambda **kw: HTMLResponse("<p>x</p>", **kw), None),
        "plain": (lambda **kw: PlainTextResponse("x", **kw), None),
        "redirect": (lambda **kw: RedirectResponse("/elsewhere", **kw), None),
        "stream": (lambda **kw: StreamingResponse(chunks(3), media_type="text/plain", **kw),
                   None),
        "file": (None, missing_file) if missing_file else (
            lambda **kw: FileResponse(path, **kw), None),
        "orjson": (None, orjson_reason) if orjson is None else (
            lambda **kw: orjson({"ok": True}, **kw), None),
        "ujson": (None, ujson_reason) if ujson is None else (
            lambda **kw: ujson({"ok": True}, **kw), None),
        "subclass": (lambda **kw: UserJSONResponse({"ok": True}, **kw), None),
    }


#: The class behind each case, to ask whether its constructor takes ``background``.
def _class_of(case):
    return {
        "response": Response, "json": JSONResponse, "html": HTMLResponse,
        "plain": PlainTextResponse, "redirect": RedirectResponse,
        "stream": StreamingResponse, "file": FileResponse, "subclass": UserJSONResponse,
    }.get(case)


def _class_endpoint(harness, factory, own):
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        if own is None:
            return factory()
        return factory(background=BackgroundTask(harness.sync_task("own")))

    return endpoint


@pytest.mark.clause("SHAPE-1")
def test_every_response_class_without_own_background(record, harness, tmp_path):
    app = FastAPI()
    labels, reasons, evidence = {}, {}, {}
    routes = []
    for case, (factory, reason) in response_factories(tmp_path).items():
        if factory is None:
            labels[case], reasons[case] = NA, reason
            continue
        app.add_api_route("/" + case, _class_endpoint(harness, factory, None), methods=["GET"])
        routes.append(case)
    for case in routes:
        ex = evidence[case] = harness.request(app, path="/" + case, timeout=TIMEOUT)
        labels[case] = runs_label(ex.effects, ["injected"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-1", _ordered(labels), reasons)


def _ordered(labels):
    order = ["response", "json", "html", "plain", "redirect", "stream", "file", "orjson",
             "ujson", "subclass", "own-in-init"]
    return dict((case, labels[case]) for case in order if case in labels)


@pytest.mark.clause("SHAPE-2")
def test_every_response_class_in_the_conflict(record, harness, tmp_path):
    OwnBackgroundJSONResponse.own = staticmethod(harness.sync_task("own"))
    app = FastAPI()
    labels, reasons, evidence = {}, {}, {}
    routes = []
    for case, (factory, reason) in response_factories(tmp_path).items():
        cls = _class_of(case)
        if factory is not None and cls is not None and not takes(cls.__init__, "background"):
            reason = "%s takes no background argument in this release" % cls.__name__
            factory = None
        if factory is None:
            labels[case], reasons[case] = NA, reason
            continue
        app.add_api_route("/" + case, _class_endpoint(harness, factory, "own"), methods=["GET"])
        routes.append(case)

    @app.get("/own-in-init")
    async def own_in_init(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return OwnBackgroundJSONResponse({"ok": True})  # no background argument: its own

    routes.append("own-in-init")
    for case in routes:
        ex = evidence[case] = harness.request(app, path="/" + case, timeout=TIMEOUT)
        labels[case] = conflict_label(ex.effects, ["injected"], ["own"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-2", _ordered(labels), reasons)


# -- SHAPE-3 / SHAPE-4: HEAD requests and bodiless statuses ---------------------------------------
@pytest.mark.clause("SHAPE-3")
def test_head_and_bodiless_statuses(record, harness):
    app = FastAPI()
    cases, labels, reasons, evidence = {}, {}, {}, {}

    def adds(name):
        async def endpoint(tasks: BackgroundTasks):
            tasks.add_task(harness.sync_task("injected"))
            if name == "status-204":
                return Response(status_code=204)
            if name == "status-304":
                return Response(status_code=304)
            if name == "decorator-204":
                return None
            return {"ok": True}

        endpoint.__name__ = "endpoint_" + name.replace("-", "_")
        return endpoint

    if hasattr(app, "head"):
        app.head("/head")(adds("head-route"))
        cases["head-route"] = ("HEAD", "/head")
    else:
        reasons["head-route"] = "the app has no head() decorator"
    if hasattr(app, "api_route"):
        app.api_route("/get-head", methods=["GET", "HEAD"])(adds("get-head-route"))
        cases["get-head-route"] = ("HEAD", "/get-head")
    else:
        reasons["get-head-route"] = "the app has no api_route() decorator"
    app.get("/204")(adds("status-204"))
    cases["status-204"] = ("GET", "/204")
    app.get("/304")(adds("status-304"))
    cases["status-304"] = ("GET", "/304")
    if takes(app.get, "status_code"):
        try:
            app.get("/d204", status_code=204)(adds("decorator-204"))
            cases["decorator-204"] = ("GET", "/d204")
        except Exception as exc:  # a release may refuse a 204 route that returns a body
            reasons["decorator-204"] = "route refused: %s: %s" % (type(exc).__name__, exc)
    else:
        reasons["decorator-204"] = "get() takes no status_code"
    for case in ("head-route", "get-head-route", "status-204", "status-304", "decorator-204"):
        if case not in cases:
            labels[case] = NA
            continue
        method, path = cases[case]
        ex = evidence[case] = harness.request(app, method=method, path=path, timeout=TIMEOUT)
        labels[case] = runs_label(ex.effects, ["injected"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-3", labels, reasons)


@pytest.mark.clause("SHAPE-4")
def test_refused_method_runs_no_task(record, harness):
    calls = []
    app = FastAPI()

    @app.get("/get-only")
    async def get_only(tasks: BackgroundTasks):
        calls.append("endpoint")
        tasks.add_task(harness.sync_task("injected"))
        return {"ok": True}

    labels, evidence = {}, {}
    for case, method in (("head-to-get-only", "HEAD"), ("post-to-get-only", "POST")):
        del calls[:]
        ex = evidence[case] = harness.request(app, method=method, path="/get-only",
                                              timeout=TIMEOUT)
        if ex.status == 405:
            ran = "no-task" if not ex.effects and not calls else (
                "endpoint-ran" if calls else "task-ran")
            labels[case] = "refused+" + ran
        else:
            labels[case] = "served+" + runs_label(ex.effects, ["injected"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-4", labels)


# -- SHAPE-5: an HTTP middleware that replaces the endpoint's response -----------------------------
@pytest.mark.clause("SHAPE-5")
def test_middleware_replacing_the_response(record, harness):
    app = FastAPI()
    if not hasattr(app, "middleware"):
        record.not_applicable("the app has no middleware() decorator")
        return

    @app.middleware("http")
    async def replace(request, call_next):
        response = await call_next(request)
        path = request.url.path
        if "read" in path:
            async for _ in response.body_iterator:
                pass
        if "own" in path:
            own = BackgroundTask(harness.sync_task("replacement"))
            return PlainTextResponse("replaced", background=own)
        return PlainTextResponse("replaced")

    @app.get("/{case}")
    async def endpoint(case: str, tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return {"ok": True}

    labels, evidence = {}, {}
    for case in ("no-read", "read", "no-read-own", "read-own"):
        ex = evidence[case] = harness.request(app, path="/" + case, timeout=TIMEOUT)
        expected = ["injected"] + (["replacement"] if case.endswith("own") else [])
        # The injected task runs in BaseHTTPMiddleware's inner task, the replacement's in the
        # outer one: two concurrent tasks that nothing orders, so their order is not graded.
        labels[case] = warned_prefix(runs_label(ex.effects, expected, ex.warnings,
                                                ordered=False), ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-5", labels)


# -- SHAPE-6 / SHAPE-7: mounted apps and nested routers --------------------------------------------
def _place_routes(target, harness, prefix):
    """A data route and a conflict route on ``target`` (an app or a router)."""

    @target.get("/data")
    async def data(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return {"ok": True}

    @target.get("/conflict")
    async def conflict(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))

    data.__name__ = "data_" + prefix
    conflict.__name__ = "conflict_" + prefix


def _nesting_app(harness, reasons):
    """One app holding every nesting case; returns ``(app, {case: path prefix})``."""
    from fastapi import APIRouter

    app = FastAPI()
    prefixes = {}
    sub = FastAPI()
    _place_routes(sub, harness, "mounted")
    app.mount("/mounted", sub)
    prefixes["mounted"] = "/mounted"

    try:
        from starlette.middleware.base import BaseHTTPMiddleware
    except ImportError as exc:
        reasons["mounted-middleware"] = "no BaseHTTPMiddleware: %s" % (exc,)
    else:
        class PassThrough(BaseHTTPMiddleware):
            async def dispatch(self, request, call_next):
                return await call_next(request)

        sub_mw = FastAPI()
        _place_routes(sub_mw, harness, "mounted_mw")
        sub_mw.add_middleware(PassThrough)
        app.mount("/mounted-mw", sub_mw)
        prefixes["mounted-middleware"] = "/mounted-mw"

    if takes(app.include_router, "prefix"):
        router = APIRouter()
        _place_routes(router, harness, "router")
        app.include_router(router, prefix="/router")
        prefixes["router-prefix"] = "/router"
    else:
        reasons["router-prefix"] = "include_router() takes no prefix"
    if hasattr(APIRouter, "include_router") and takes(APIRouter.include_router, "prefix"):
        inner, outer = APIRouter(), APIRouter()
        _place_routes(inner, harness, "nested")
        outer.include_router(inner, prefix="/inner")
        app.include_router(outer, prefix="/outer")
        prefixes["nested-routers"] = "/outer/inner"
    else:
        reasons["nested-routers"] = "APIRouter has no include_router(prefix=)"
    return app, prefixes


NESTING_CASES = ("mounted", "mounted-middleware", "router-prefix", "nested-routers")


@pytest.mark.clause("SHAPE-6")
def test_mounted_and_nested_data_returns(record, harness):
    reasons = {}
    app, prefixes = _nesting_app(harness, reasons)
    labels, evidence = {}, {}
    for case in NESTING_CASES:
        if case not in prefixes:
            labels[case] = NA
            continue
        ex = evidence[case] = harness.request(app, path=prefixes[case] + "/data",
                                              timeout=TIMEOUT)
        labels[case] = runs_label(ex.effects, ["injected"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-6", labels, reasons)


@pytest.mark.clause("SHAPE-7")
def test_mounted_and_nested_conflict(record, harness):
    reasons = {}
    app, prefixes = _nesting_app(harness, reasons)
    labels, evidence = {}, {}
    for case in NESTING_CASES:
        if case not in prefixes:
            labels[case] = NA
            continue
        ex = evidence[case] = harness.request(app, path=prefixes[case] + "/conflict",
                                              timeout=TIMEOUT)
        labels[case] = conflict_label(ex.effects, ["injected"], ["own"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-7", labels, reasons)


# -- SHAPE-8: how the parameter is declared --------------------------------------------------------
class SubclassTasks(BackgroundTasks):
    """A user's subclass of fastapi.BackgroundTasks, used only as an annotation."""


class UserMetadata(object):
    """Metadata FastAPI does not know, as libraries put in ``Annotated``."""


def _annotated():
    try:
        from typing import Annotated
    except ImportError:
        try:
            from typing_extensions import Annotated
        except ImportError:
            return None
    return Annotated


def _declarations(harness, seen):
    """``{case: (endpoint maker, expected task names)}``; a maker may raise at definition."""
    from typing import Optional

    from fastapi import Depends

    def note(case, *objects):
        seen[case] = {"types": [type(o).__name__ for o in objects],
                      "same_object": len(objects) < 2 or all(o is objects[0] for o in objects)}

    def annotated_case():
        Annotated = _annotated()
        if Annotated is None:
            return None

        async def endpoint(tasks: Annotated[BackgroundTasks, UserMetadata()]):
            note("annotated", tasks)
            tasks.add_task(harness.sync_task("injected"))
            return {"ok": True}

        return endpoint

    async def subclass(tasks: SubclassTasks):
        note("subclass", tasks)
        tasks.add_task(harness.sync_task("injected"))
        return {"ok": True}

    async def starlette_annotation(tasks: StarletteTasks):
        note("starlette-annotation", tasks)
        tasks.add_task(harness.sync_task("injected"))
        return {"ok": True}

    async def optional(tasks: Optional[BackgroundTasks] = None):
        note("optional", tasks)
        tasks.add_task(harness.sync_task("injected"))  # None -> AttributeError: a 500
        return {"ok": True}

    async def depends(tasks: BackgroundTasks = Depends()):
        note("depends", tasks)
        tasks.add_task(harness.sync_task("injected"))
        return {"ok": True}

    async def two(first: BackgroundTasks, second: BackgroundTasks):
        note("two-parameters", first, second)
        first.add_task(harness.sync_task("first"))
        second.add_task(harness.sync_task("second"))
        return {"ok": True}

    return {
        "annotated": (annotated_case, ["injected"]),
        "subclass": (lambda: subclass, ["injected"]),
        "starlette-annotation": (lambda: starlette_annotation, ["injected"]),
        "optional": (lambda: optional, ["injected"]),
        "depends": (lambda: depends, ["injected"]),
        "two-parameters": (lambda: two, ["first", "second"]),
    }


@pytest.mark.clause("SHAPE-8")
def test_parameter_declarations(record, harness):
    seen = {}
    labels, reasons, evidence, refused = {}, {}, {}, {}
    for case, (make, expected) in _declarations(harness, seen).items():
        endpoint = make()
        if endpoint is None:
            labels[case], reasons[case] = NA, "typing.Annotated is not importable"
            continue
        app = FastAPI()
        try:  # FastAPI checks parameters when the route is added; a refusal is loud
            app.add_api_route("/", endpoint, methods=["GET"])
        except Exception as exc:
            refused[case] = "%s: %s" % (type(exc).__name__, message_of(exc)[:300])
            labels[case] = "rejected"
            continue
        ex = evidence[case] = harness.request(app, timeout=TIMEOUT)
        if failed(ex) and not ex.effects:
            labels[case] = "not-injected"
        else:
            labels[case] = runs_label(ex.effects, expected, ex.warnings)
    record.observe("cases", evidence)
    record.observe("injected_objects", seen)
    record.observe("rejected_at_definition", refused)
    grade_cases(record, "SHAPE-8", labels, reasons)


# -- SHAPE-9: the conflict with an empty own collection --------------------------------------------
@pytest.mark.clause("SHAPE-9")
def test_empty_own_collection(record, harness):
    app = FastAPI()

    @app.get("/starlette")
    async def starlette_empty(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return PlainTextResponse("x", background=StarletteTasks())

    @app.get("/fastapi")
    async def fastapi_empty(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        return PlainTextResponse("x", background=BackgroundTasks())

    labels, evidence = {}, {}
    for case in ("starlette", "fastapi"):
        ex = evidence[case] = harness.request(app, path="/" + case, timeout=TIMEOUT)
        labels[case] = conflict_label(ex.effects, ["injected"], [], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-9", labels)


assert all("SHAPE-%d" % n in vocabulary.EXPECTATIONS for n in range(1, 10))
