"""Shapes: every dependency site, exception handlers and sync endpoints (SHAPE-10 to SHAPE-16).

spec/shapes.md.  A dependency that adds a task to the injected BackgroundTasks, declared at
every place FastAPI lets a dependency sit; failures that an exception handler turns into a
response; and every conflict case with a ``def`` endpoint beside an ``async def`` one.  Every
site and feature is found by capability (a site the release refuses with ``TypeError`` reads
``<site>:n/a``); a dependency records a ``dep-called`` event each time it runs, so a site the
release accepts but never calls is seen apart from the task it would have added.
"""
import inspect

import pytest
from kind import require_fastapi
from oracle import conflict_label, runs_label

from bgmatrix import vocabulary

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.background import BackgroundTasks as StarletteTasks  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402

TIMEOUT = 5.0  # seconds per request: a release that hangs is recorded as a timeout

#: Where a dependency can sit, in the order graded.
SITES = ("param", "decorator", "router", "include-router", "app", "sub-dependency", "class",
         "security", "yield")
#: What the endpoints behind each site return.
RETURNS = ("data", "response", "conflict")


def calls(exchange):
    """How many times a dependency ran during the request (its ``dep-called`` events)."""
    return len([e for e in exchange.events if e["kind"] == "dep-called"])


def composite(labels):
    return " ".join("%s:%s" % item for item in labels.items())


def grade_cases(record, clause, labels, skip=("n/a", "dep-not-called")):
    """Grade ``{case: label}``; cases whose label is in ``skip`` are kept in the label only."""
    graded = [label for label in labels.values() if label not in skip]
    if not graded:
        record.not_applicable("no case applies (%s)" % composite(labels), [clause])
        return
    record.grade(clause, composite(labels), graded=graded)


# -- the dependency sites --------------------------------------------------------------------
def reply(harness, kind):
    if kind == "data":
        return {"ok": True}
    if kind == "response":
        return PlainTextResponse("own response")
    return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))


def site_endpoint(harness, kind, marker):
    if marker is None:
        async def endpoint():
            return reply(harness, kind)
    else:
        async def endpoint(_=marker):
            # A release without generator dependencies passes the generator object itself.
            harness.log("dep-value", generator=inspect.isgenerator(_))
            return reply(harness, kind)
    return endpoint


def build_site(site, harness):
    """An app whose three routes (RETURNS) depend on a task-adding dependency at ``site``.

    Returns ``(app, None)``, or ``(None, reason)`` when the release lacks the site."""

    def dep(tasks: BackgroundTasks):
        harness.log("dep-called", site=site)
        tasks.add_task(harness.sync_task("dep"))

    app_kwargs, route_kwargs, include_kwargs = {}, {}, {}
    router_kwargs, marker = None, None
    if site == "param":
        marker = Depends(dep)
    elif site == "decorator":
        route_kwargs = {"dependencies": [Depends(dep)]}
    elif site == "router":
        router_kwargs = {"dependencies": [Depends(dep)]}
    elif site == "include-router":
        router_kwargs, include_kwargs = {}, {"dependencies": [Depends(dep)]}
    elif site == "app":
        app_kwargs = {"dependencies": [Depends(dep)]}
    elif site == "sub-dependency":
        def outer(_=Depends(dep)):
            return None

        marker = Depends(outer)
    elif site == "class":
        class Tasking(object):
            def __init__(self, tasks: BackgroundTasks):
                harness.log("dep-called", site=site)
                tasks.add_task(harness.sync_task("dep"))

        marker = Depends(Tasking)
    elif site == "security":
        if not hasattr(fastapi, "Security"):
            return None, "release has no fastapi.Security"
        marker = fastapi.Security(dep)
    elif site == "yield":
        def resource(tasks: BackgroundTasks):
            harness.log("dep-called", site=site)
            tasks.add_task(harness.sync_task("dep"))
            yield "resource"

        marker = Depends(resource)
    try:
        app = FastAPI(**app_kwargs)
        target = app if router_kwargs is None else APIRouter(**router_kwargs)
        for kind in RETURNS:
            target.get("/" + kind, **route_kwargs)(site_endpoint(harness, kind, marker))
        if router_kwargs is not None:
            app.include_router(target, **include_kwargs)
    except TypeError as exc:  # the release does not take the site's argument
        return None, "site refused: TypeError: %s" % (exc,)
    return app, None


def generator_passed(exchanges):
    """The endpoint received the generator object: the release lacks generator dependencies."""
    return any(e.get("generator") for ex in exchanges for e in ex.events
               if e["kind"] == "dep-value")


def called_label(counts):
    """SHAPE-12: the dependency ran once in every request, in none, or otherwise."""
    if all(n == 1 for n in counts):
        return "called"
    if any(n > 1 for n in counts):
        return "called-twice"
    return "dep-not-called" if not any(counts) else "called-sometimes"


@pytest.mark.clause("SHAPE-10", "SHAPE-11", "SHAPE-12")
def test_every_dependency_site(record, harness):
    runs, conflicts, called, evidence, absent = {}, {}, {}, {}, {}
    for site in SITES:
        app, reason = build_site(site, harness)
        if app is not None:
            exchanges = evidence[site] = {
                kind: harness.request(app, path="/" + kind, timeout=TIMEOUT) for kind in RETURNS}
            if generator_passed(exchanges.values()):
                app, reason = None, "release passes the generator itself (no yield dependencies)"
        if app is None:
            absent[site] = reason
            for kind in ("data", "response"):
                runs["%s-%s" % (site, kind)] = "n/a"
            conflicts[site] = called[site] = "n/a"
            continue
        for kind in ("data", "response"):
            ex = exchanges[kind]
            runs["%s-%s" % (site, kind)] = (
                runs_label(ex.effects, ["dep"], ex.warnings) if calls(ex) else "dep-not-called")
        ex = exchanges["conflict"]
        conflicts[site] = (conflict_label(ex.effects, ["dep"], ["own"], ex.warnings)
                           if calls(ex) else "dep-not-called")
        called[site] = called_label([calls(exchanges[kind]) for kind in RETURNS])
    record.observe("cases", evidence)
    record.observe("absent_sites", absent)
    grade_cases(record, "SHAPE-10", runs)
    grade_cases(record, "SHAPE-11", conflicts)
    grade_cases(record, "SHAPE-12", called, skip=("n/a",))


# -- exception handlers ----------------------------------------------------------------------
class Boom(Exception):
    """A user exception with its own handler."""


#: case -> (what the endpoint raises, the handler's key); "-bg" cases' handlers add their own.
HANDLED = {
    "user": "user", "user-bg": "user",
    "http": "http", "http-bg": "http",
    "server-error": "server-error", "server-error-bg": "server-error",
}


def handled_app(harness, case):
    kind = HANDLED[case]
    own = BackgroundTask(harness.sync_task("handler-own")) if case.endswith("-bg") else None

    async def handler(request, exc):
        return PlainTextResponse("handled", status_code=409 if kind != "server-error" else 500,
                                 background=own)

    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        if kind == "user":
            raise Boom("user failure after adding a task")
        if kind == "http":
            raise HTTPException(status_code=409, detail="conflict")
        raise RuntimeError("endpoint failed after adding a task")

    key = {"user": Boom, "http": StarletteHTTPException, "server-error": Exception}[kind]
    app.add_exception_handler(key, handler)
    return app


def not_run_label(effects, name):
    count = effects.count(name)
    return "not-run" if not count else ("ran" if count == 1 else "duplicate")


@pytest.mark.clause("SHAPE-13", "SHAPE-14")
def test_exception_handlers(record, harness):
    injected, handler_own, evidence = {}, {}, {}
    for case in HANDLED:
        ex = evidence[case] = harness.request(handled_app(harness, case), timeout=TIMEOUT)
        injected[case] = not_run_label(ex.effects, "injected")
        if case.endswith("-bg"):
            handler_own[case] = runs_label(ex.effects, ["handler-own"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-13", injected)
    grade_cases(record, "SHAPE-14", handler_own)


@pytest.mark.clause("SHAPE-15")
def test_validation_error_after_a_dependency_added_a_task(record, harness):
    """A dependency on a header runs; then the endpoint's own query parameter fails."""
    from fastapi import Header

    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        RequestValidationError = None

    def dep(tasks: BackgroundTasks, x_token: str = Header(...)):
        harness.log("dep-called", site="header")
        tasks.add_task(harness.sync_task("dep"))

    def make_app(custom):
        app = FastAPI()

        @app.get("/")
        async def endpoint(n: int, _=Depends(dep)):
            return {"n": n}

        if custom:
            async def handler(request, exc):
                return PlainTextResponse("invalid", status_code=422)

            app.add_exception_handler(RequestValidationError, handler)
        return app

    labels, evidence = {}, {}
    for case in ("default-handler", "custom-handler"):
        if case == "custom-handler" and RequestValidationError is None:
            labels[case] = "n/a"
            continue
        ex = evidence[case] = harness.request(
            make_app(case == "custom-handler"), path="/?n=not-a-number",
            headers=[("x-token", "t")], timeout=TIMEOUT)
        labels[case] = not_run_label(ex.effects, "dep") if calls(ex) else "dep-not-called"
    record.observe("cases", evidence)
    grade_cases(record, "SHAPE-15", labels)


# -- sync endpoints --------------------------------------------------------------------------
#: case -> (injected names, own names); own None: not a conflict, graded by runs_label.
SYNC_CASES = {
    "data": (["injected"], None),
    "response": (["injected"], None),
    "bg-task": (["injected-1", "injected-2"], ["own"]),
    "bg-tasks": (["injected"], ["own-1", "own-2"]),
    "dep": (["dep"], ["own"]),
    "identity": (["a", "b"], None),
}


def sync_body(harness, case, tasks):
    injected, own = SYNC_CASES[case]
    if tasks is not None:
        for name in injected:
            tasks.add_task(harness.sync_task(name) if name != "injected-2"
                           else harness.async_task(name))
    if case == "data":
        return {"ok": True}
    if case == "response":
        return PlainTextResponse("own response")
    if case == "identity":
        return PlainTextResponse("x", background=tasks)
    if case == "bg-tasks":
        background = StarletteTasks()
        for name in own:
            background.add_task(harness.sync_task(name))
        return PlainTextResponse("x", background=background)
    return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))


def sync_endpoint(harness, case, sync, dep):
    if case == "dep":
        if sync:
            def endpoint(_=Depends(dep)):
                return sync_body(harness, case, None)
        else:
            async def endpoint(_=Depends(dep)):
                return sync_body(harness, case, None)
    elif sync:
        def endpoint(tasks: BackgroundTasks):
            return sync_body(harness, case, tasks)
    else:
        async def endpoint(tasks: BackgroundTasks):
            return sync_body(harness, case, tasks)
    return endpoint


def case_label(case, ex):
    injected, own = SYNC_CASES[case]
    if own is None:
        return runs_label(ex.effects, injected, ex.warnings)
    return conflict_label(ex.effects, injected, own, ex.warnings)


def sameness_label(sync, asynchronous):
    """``same (<case>:<label> ...)`` or ``differs: <case>=<sync>/<async> ...``."""
    differing = [case for case in sync if sync[case] != asynchronous[case]]
    if not differing:
        return "same (%s)" % composite(sync), "same"
    return "differs: " + " ".join(
        "%s=%s/%s" % (case, sync[case], asynchronous[case]) for case in differing), "differs"


@pytest.mark.clause("SHAPE-16")
def test_sync_endpoints_behave_like_async_ones(record, harness):
    def dep(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("dep"))

    app = FastAPI()
    for case in SYNC_CASES:
        for flavour in ("sync", "async"):
            app.get("/%s/%s" % (flavour, case))(
                sync_endpoint(harness, case, flavour == "sync", dep))
    labels, evidence = {"sync": {}, "async": {}}, {}
    for case in SYNC_CASES:
        for flavour in ("sync", "async"):
            ex = evidence["%s-%s" % (flavour, case)] = harness.request(
                app, path="/%s/%s" % (flavour, case), timeout=TIMEOUT)
            labels[flavour][case] = case_label(case, ex)
    record.observe("cases", evidence)
    record.observe("labels", labels)
    label, graded = sameness_label(labels["sync"], labels["async"])
    record.grade("SHAPE-16", label, graded=[graded])


assert all("SHAPE-%d" % n in vocabulary.EXPECTATIONS for n in range(10, 17))
