"""Backwards compatibility, measured: what a resolution of FastAPI #11215 changes for code
that already exists.  One test per row; each builds a small FastAPI app, sends requests over
raw ASGI and records what it saw (``row.record(name, label, facts)``).

Nothing here asserts an expected outcome: a build that breaks existing code is data.  The
labels are observations (``runs-twice``, ``raises UserWarning: ...``); ``bgmatrix compat``
compares each with the unpatched release's.
"""

import asyncio
import logging
import re
import warnings
from collections import Counter
from typing import Annotated  # the cells run Python 3.11

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask
from starlette.responses import Response

REQUEST_TIMEOUT = 10  # seconds per request; a hang is a harness failure, not an observation
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


# -- sending a request ---------------------------------------------------------------------


async def _call(app, path):
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
    }
    done = asyncio.Event()
    sent = {"status": None, "body": b""}
    first = [True]

    async def receive():
        if first[0]:
            first[0] = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")
            if not message.get("more_body", False):
                done.set()

    # Starlette runs a response's background after the body, inside the app call: when the
    # call returns, every task that was going to run has run.
    await asyncio.wait_for(app(scope, receive, send), REQUEST_TIMEOUT)
    return sent["status"]


def _text(exc):
    said = " ".join(str(exc).split())
    return _ADDRESS.sub("0x…", f"{type(exc).__name__}: {said}" if said
                        else type(exc).__name__)[:300]


class _Logged(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def request(app, path):
    """Send one GET; return what the request did: status, or the exception it raised, every
    warning issued meanwhile (all recorded, each time) and every WARNING-or-worse record of
    FastAPI's logger (a signal production logging collects where warnings are filtered)."""
    logged = _Logged()
    logger = logging.getLogger("fastapi")
    logger.addHandler(logged)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                status, raised = asyncio.run(_call(app, path)), None
            except asyncio.TimeoutError:
                raise  # the harness hung: fail the test
            except Exception as exc:  # the app (or the build) raised: an observation
                status, raised = None, _text(exc)
    finally:
        logger.removeHandler(logged)
    return {
        "status": status,
        "raised": raised,
        "log_records": [f"{r.name} {r.levelname}: {_ADDRESS.sub('0x…', r.getMessage())}"
                        for r in logged.records],
        "warnings": ["{}: {}".format(w.category.__name__, _ADDRESS.sub("0x…", str(w.message)))
                     for w in caught],
        "user_warning": any(issubclass(w.category, UserWarning) for w in caught),
    }


def request_one(endpoint):
    """``request`` to a fresh app whose one route, GET /, is ``endpoint``."""
    app = FastAPI()
    app.get("/")(endpoint)
    return request(app, "/")


def strict_request(app, path):
    """Send one GET as a test suite with ``warnings.simplefilter("error")`` would."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return {"status": asyncio.run(_call(app, path)), "raised": None}
        except asyncio.TimeoutError:
            raise
        except Exception as exc:
            return {"status": None, "raised": _text(exc)}


class Ran:
    """The tasks' effects: each task appends its name."""

    def __init__(self):
        self.names = []

    def task(self, name):
        self.names.append(name)

    def counts(self, *expected):
        found = Counter(self.names)
        return {name: found.get(name, 0) for name in sorted(set(expected) | set(found))}


def times(n):
    return {0: "not-run", 1: "runs-once", 2: "runs-twice"}.get(n, f"runs-{n}-times")


def with_signals(label, seen):
    """The request's exception replaces the label; a UserWarning or a record on FastAPI's
    logger is appended to it."""
    if seen["raised"]:
        return "raises " + seen["raised"].split(":")[0]
    return (label + (" + UserWarning" if seen["user_warning"] else "")
            + (" + log record" if seen.get("log_records") else ""))


# -- the rows --------------------------------------------------------------------------------


def test_workaround_copy(row):
    """Users who worked around #11215 by copying the injected tasks into their own
    BackgroundTasks and sending that: does the copied task now run twice?"""
    ran, kept = Ran(), {}

    async def endpoint(bt: BackgroundTasks):
        bt.add_task(ran.task, "copied")
        own = BackgroundTasks()
        for t in bt.tasks:
            own.tasks.append(t)
        own.add_task(ran.task, "own")
        kept["own"] = own
        return Response("ok", background=own)

    seen = request_one(endpoint)
    counts = ran.counts("copied", "own")
    own_after = len(kept["own"].tasks) if "own" in kept else None
    label = times(counts["copied"])
    if own_after not in (None, 2):
        label += "; own tasks list changed"
    row.record("workaround-copy", with_signals(label, seen), dict(
        seen, counts=counts, own_tasks_before=2, own_tasks_after=own_after))


def test_workaround_wrap(row):
    """Users who sent the injected object wrapped as a BackgroundTask's function."""
    ran = Ran()

    async def endpoint(bt: BackgroundTasks):
        bt.add_task(ran.task, "wrapped")
        return Response("ok", background=BackgroundTask(bt))

    seen = request_one(endpoint)
    counts = ran.counts("wrapped")
    row.record("workaround-wrap", with_signals(times(counts["wrapped"]), seen),
               dict(seen, counts=counts))


def test_clear_escape_hatch(row):
    """The maintainer's advice: clear the injected tasks, then send your own background."""
    ran = Ran()

    async def endpoint(bt: BackgroundTasks):
        bt.add_task(ran.task, "cleared")
        bt.tasks.clear()
        return Response("ok", background=BackgroundTask(ran.task, "own"))

    seen = request_one(endpoint)
    counts = ran.counts("cleared", "own")
    if counts == {"cleared": 0, "own": 1}:
        label = "own-runs-once"
    else:
        label = "cleared {}, own {}".format(times(counts["cleared"]), times(counts["own"]))
    row.record("clear-escape-hatch", with_signals(label, seen), dict(seen, counts=counts))


def test_dependency_tasks(row):
    """A dependency adds a task; the endpoint returns its own background.  Dropped for years:
    does it start running?"""
    ran = Ran()

    def audit(bt: BackgroundTasks):
        bt.add_task(ran.task, "dependency")

    async def endpoint(_: Annotated[None, Depends(audit)]):
        return Response("ok", background=BackgroundTask(ran.task, "own"))

    seen = request_one(endpoint)
    counts = ran.counts("dependency", "own")
    label = {0: "dep-task-dropped", 1: "dep-task-runs"}.get(
        counts["dependency"], "dep-task-" + times(counts["dependency"]))
    if counts["own"] != 1:
        label += "; own " + times(counts["own"])
    row.record("dependency-tasks", with_signals(label, seen), dict(seen, counts=counts))


def _attempt(action):
    try:
        return "ok", action()
    except Exception as exc:
        return type(exc).__name__, None


def test_route_class_introspection(row):
    """A custom APIRoute whose handler reads the sent response's background: ``.func``,
    ``.tasks`` and ``.add_task``.  What does it see?"""
    ran, seen_by_route, made = Ran(), {}, {}

    class Introspecting(APIRoute):
        def get_route_handler(self):
            original = super().get_route_handler()

            async def handler(request):
                response = await original(request)
                bg = response.background
                func, f = _attempt(lambda: bg.func)
                tasks, t = _attempt(lambda: len(bg.tasks))
                add, _ = _attempt(lambda: bg.add_task(ran.task, "added-by-route"))
                seen_by_route.update({
                    "response_is_endpoint_response": response is made.get("response"),
                    "background_is_endpoint_background": bg is made.get("background"),
                    "background_type": f"{type(bg).__module__}.{type(bg).__qualname__}",
                    ".func": func if func != "ok" else "ok: " + getattr(
                        f, "__name__", type(f).__name__),
                    ".tasks": tasks if tasks != "ok" else f"ok: {t} task(s)",
                    ".add_task": add,
                })
                return response

            return handler

    app = FastAPI()
    router = APIRouter(route_class=Introspecting)

    @router.get("/")
    async def endpoint(bt: BackgroundTasks):
        bt.add_task(ran.task, "injected")
        made["background"] = BackgroundTask(ran.task, "own")
        made["response"] = Response("ok", background=made["background"])
        return made["response"]

    app.include_router(router)
    seen = request(app, "/")
    counts = ran.counts("injected", "own", "added-by-route")
    if seen_by_route:
        who = ("user object" if seen_by_route["background_is_endpoint_background"]
               else "new " + seen_by_route["background_type"].rsplit(".", 1)[-1])
        if not seen_by_route["response_is_endpoint_response"]:
            who += " on a copy"
        label = "{}: {}".format(who, ", ".join(
            "{} {}".format(attr, seen_by_route[attr].split(":")[0])
            for attr in (".func", ".tasks", ".add_task")))
    else:
        label = "handler saw no response"
    row.record("route-class-introspection", with_signals(label, seen),
               dict(seen, counts=counts, route_saw=seen_by_route))


def test_response_subclass_state(row):
    """A Response subclass that keeps state on ``self`` when it is sent; the app keeps a
    reference and reads it after the request.  Is the object sent the user's own?"""
    ran, refs = Ran(), {}

    class Tracking(Response):
        async def __call__(self, scope, receive, send):
            self.sent = True
            await super().__call__(scope, receive, send)

    app = FastAPI()

    @app.get("/plain")
    async def plain():
        refs["plain"] = Tracking("ok")
        return refs["plain"]

    @app.get("/injected-only")
    async def injected_only(bt: BackgroundTasks):
        bt.add_task(ran.task, "injected-only")
        refs["injected-only"] = Tracking("ok")
        return refs["injected-only"]

    @app.get("/conflict")
    async def conflict(bt: BackgroundTasks):
        bt.add_task(ran.task, "conflict-injected")
        own = BackgroundTask(ran.task, "conflict-own")
        refs["conflict"] = Tracking("ok", background=own)
        refs["conflict-own"] = own
        return refs["conflict"]

    facts, signals, copied = {}, [], []
    for case in ("plain", "injected-only", "conflict"):
        seen = request(app, "/" + case)
        signals.append(seen)
        ref = refs.get(case)
        bg = getattr(ref, "background", None)
        facts[case] = dict(seen, reference_saw_sent=getattr(ref, "sent", False),
                           reference_background=(
                               None if bg is None else
                               "own" if bg is refs.get("conflict-own") else
                               f"{type(bg).__module__}.{type(bg).__qualname__}"))
        if not facts[case]["reference_saw_sent"]:
            copied.append(case)
    facts["counts"] = ran.counts("injected-only", "conflict-injected", "conflict-own")
    label = "copy-not-user-object: " + ", ".join(copied) if copied else "user-object-sent"
    if facts["conflict"]["reference_background"] not in ("own", None):
        label += "; conflict: user's response.background replaced"
    worst = next((s for s in signals if s["raised"]), None) or {
        "raised": None, "user_warning": any(s["user_warning"] for s in signals),
        "log_records": [r for s in signals for r in s["log_records"]]}
    row.record("response-subclass-state", with_signals(label, worst), facts)


def test_warnings_as_errors(row):
    """A user test suite running with warnings turned into errors: the conflict, identity,
    declared-unused and cleared endpoints.  Does any request now raise?"""
    ran = Ran()
    app = FastAPI()

    @app.get("/conflict")
    async def conflict(bt: BackgroundTasks):
        bt.add_task(ran.task, "conflict-injected")
        return Response("ok", background=BackgroundTask(ran.task, "conflict-own"))

    @app.get("/identity")
    async def identity(bt: BackgroundTasks):
        bt.add_task(ran.task, "identity")
        return Response("ok", background=bt)

    @app.get("/declared-unused")
    async def declared_unused(bt: BackgroundTasks):
        return Response("ok", background=BackgroundTask(ran.task, "declared-unused-own"))

    @app.get("/cleared")
    async def cleared(bt: BackgroundTasks):
        bt.add_task(ran.task, "cleared")
        bt.tasks.clear()
        return Response("ok", background=BackgroundTask(ran.task, "cleared-own"))

    cases = ("conflict", "identity", "declared-unused", "cleared")
    facts = {case: strict_request(app, "/" + case) for case in cases}
    facts["counts"] = ran.counts("conflict-injected", "conflict-own", "identity",
                                 "declared-unused-own", "cleared", "cleared-own")
    by_error = {}
    for case in cases:
        if facts[case]["raised"]:
            by_error.setdefault(facts[case]["raised"].split(":")[0], []).append(case)
    label = "; ".join("raises {}: {}".format(err, ", ".join(found))
                      for err, found in sorted(by_error.items())) or "no-raise"
    row.record("warnings-as-errors", label, facts)
