"""The apps wire mode serves under uvicorn, inside the cell's own environment.

One ASGI application, ``app``, routes by path prefix to two small apps built on FastAPI when
the cell has it (and is not a Starlette cell, ``BGMATRIX_KIND``), on pure Starlette otherwise:

- the plain app: EXEC-1 (``/exec1/<case>``), MW-7 (``/mw7``) and, on FastAPI, ATTACH-3
  (``/attach3``), ATTACH-6 (``/attach6``) and ISO-1 (``/iso/<variant>``);
- under ``/mw/``, the same framework behind a pass-through ``BaseHTTPMiddleware``: MW-1 and
  MW-2 (``/mw/response``, ``/mw/stream``).

The host (bgmatrix/wire.py) sees the server's side through files in ``BGMATRIX_WIRE_DIR``:

- ``effects.jsonl`` is the effect log, one JSON object a line, in the order things happened in
  this process: task effects, warnings, ``app-returned`` once a request's application call
  (background included) has ended, ``disconnect`` when the app received ``http.disconnect``.
  Each line names the request in flight when it was written (``run``) and the request whose
  handler created the task (``origin``): a task carried into a later request shows as that
  request's ``run`` with an earlier ``origin``.
- ``gate-<run>`` is created by the host once its client holds the complete body (or has given
  up waiting for it).  A gated task records ``start``, waits for its gate, then records
  ``released`` (or ``gate-timeout`` after ``GATE_DEADLINE``) and ``end``.  A task that ran
  before the body was sent would hold the body back: the client's wait for it fails, which is
  the wire's evidence of ``before-body``, with no sleep involved in the proof.

The host runs one request at a time and waits for ``app-returned`` before the next, so "the
request in flight" is a module-level value.  Only APIs present from Starlette 0.9.9 and
FastAPI 0.10.0 on are used (see tests/spec/webapp.py for the same choices).  Python 3.8+.
"""
import asyncio
import contextvars
import inspect
import json
import os
import sys
import threading
import time
import warnings
from urllib.parse import parse_qs

import starlette
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    StreamingResponse,
)

WIRE_DIR = os.environ.get("BGMATRIX_WIRE_DIR") or os.getcwd()
EFFECTS = os.path.join(WIRE_DIR, "effects.jsonl")
#: Seconds a gated task waits for its gate.  Longer than the host's wait for a body, so that
#: a body held back by a task is seen as missing by the client before the task gives up.
GATE_DEADLINE = float(os.environ.get("BGMATRIX_WIRE_GATE_DEADLINE", "3.0"))
_POLL = 0.005  # seconds between looks at a gate file: a bounded poll, never the proof


def _import_fastapi():
    if os.environ.get("BGMATRIX_KIND") == "starlette":
        return None
    try:
        import fastapi
    except ImportError:
        return None
    return fastapi


fastapi = _import_fastapi()


def is_asgi2(app):
    """ASGI 2 apps take ``(scope)`` and return an instance; ASGI 3 apps take three arguments."""
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else app.__call__
    try:
        return len(inspect.signature(call).parameters) == 1
    except (TypeError, ValueError):
        return False


#: Starlette < 0.12 speaks ASGI 2; the outermost wrapper speaks what the framework speaks.
STARLETTE_ASGI2 = is_asgi2(Starlette())
INTERFACE = "asgi2" if STARLETTE_ASGI2 else "asgi3"


# -- the effect log ------------------------------------------------------------------------

_current = {"run": None, "query": {}, "asgi": None}
_lock = threading.Lock()
#: The request whose application call runs in this context: exact under concurrency (each
#: request is its own task), where ``_current`` names only the newest request.  A worker
#: thread of an old Starlette does not inherit the context and falls back to ``_current``.
_RUN = contextvars.ContextVar("bgmatrix_wire_run", default=None)


def effect(name, kind="task", origin=None, run=None, **fields):
    """Append one line to the effect log.  Called from the loop and from worker threads."""
    record = {"kind": kind, "name": name, "run": run or _RUN.get() or _current["run"]}
    record["origin"] = origin or record["run"]
    record.update(fields)
    line = json.dumps(record, sort_keys=True) + "\n"
    with _lock:
        with open(EFFECTS, "a") as fh:
            fh.write(line)


def _record_warning(message, category, filename, lineno, file=None, line=None):
    effect("warning", kind="warning", category=category.__name__, message=str(message),
           user_warning=issubclass(category, UserWarning))


# The raw harness records every warning with every filter set to "always" (spec/index.md,
# qualifying warning); the server does the same for the requests it serves.
warnings.simplefilter("always")
warnings.showwarning = _record_warning


def query(name, default=""):
    return _current["query"].get(name, default)


# -- tasks ---------------------------------------------------------------------------------


def sync_effect(name):
    """A plain task recording ``name``; its origin is the request that created it."""
    origin = _RUN.get() or _current["run"]

    def task():
        effect(name, origin=origin)

    return task


def async_effect(name):
    origin = _RUN.get() or _current["run"]

    async def task():
        effect(name, origin=origin)

    return task


async def wait_gate(run):
    """Wait for the host to create ``gate-<run>``; False when ``GATE_DEADLINE`` passed first."""
    path = os.path.join(WIRE_DIR, "gate-" + run)
    deadline = time.monotonic() + GATE_DEADLINE
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


def gated_task(run):
    """An async task that records ``start``, holds at its gate, then ``released`` and ``end``.

    ``cancelled`` is recorded when the task is cancelled while it holds (MW-2).
    """

    async def task():
        effect("start", origin=run)
        try:
            opened = await wait_gate(run)
        except asyncio.CancelledError:
            effect("cancelled", origin=run)
            raise
        effect("released" if opened else "gate-timeout", origin=run)
        effect("end", origin=run)

    return task


async def chunks(count, size=8):
    for i in range(count):
        yield (str(i) * size).encode("ascii")


async def gated_stream(run, size=1024):
    """MW-7's body: one chunk, then a hold until the host has disconnected, then three more.

    ``stream-stopped`` is recorded when the framework stops the generator at the hold (it
    noticed the disconnect); ``chunk-N`` before each chunk is handed to the framework.
    """
    effect("chunk-0", origin=run)
    yield b"0" * size
    try:
        await wait_gate(run)
    except BaseException:  # cancelled, or closed by the framework (GeneratorExit)
        effect("stream-stopped", origin=run)
        raise
    for i in range(1, 4):
        effect(f"chunk-{i}", origin=run)
        yield str(i).encode("ascii") * size


def served_file():
    """A file of more than three of FileResponse's read chunks, so it is sent in pieces."""
    path = os.path.join(WIRE_DIR, "served.bin")
    if not os.path.exists(path):
        with open(path, "wb") as fh:
            fh.write(b"f" * (3 * getattr(FileResponse, "chunk_size", 64 * 1024) + 1))
    return path


def file_response_missing():
    """Why FileResponse cannot serve here (Starlette < 0.15 needs aiofiles), or None."""
    try:
        FileResponse(served_file())
    except (AssertionError, ImportError) as exc:
        return f"FileResponse unavailable in this cell: {exc}"
    return None


# -- routes --------------------------------------------------------------------------------


def exec1(case):
    """EXEC-1: a response of kind ``case`` whose task holds at its gate."""

    def respond():
        background = BackgroundTask(gated_task(query("run")))
        if case == "response":
            return PlainTextResponse("a plain body", background=background)
        if case == "stream":
            return StreamingResponse(chunks(3), media_type="text/plain", background=background)
        return FileResponse(served_file(), background=background)

    return respond


def mw7():
    run = query("run")
    return StreamingResponse(gated_stream(run), media_type="text/plain",
                             background=BackgroundTask(sync_effect("background")))


def mw_gated(case):
    """MW-1 and MW-2: the inner app's response of kind ``case``, its task held at the gate."""

    def respond():
        background = BackgroundTask(gated_task(query("run")))
        if case == "stream":
            return StreamingResponse(chunks(3), media_type="text/plain", background=background)
        return PlainTextResponse("inner body", background=background)

    return respond


def info():
    return {
        "framework": "fastapi" if fastapi else "starlette",
        "fastapi": getattr(fastapi, "__version__", None),
        "starlette": getattr(starlette, "__version__", None),
        "python": ".".join(str(n) for n in sys.version_info[:3]),
        "interface": INTERFACE,
        "file_response": file_response_missing(),
        "scope": _current.get("asgi"),
    }


def ping():
    """What the host needs to know about this server: versions, interface, ASGI scope."""
    return JSONResponse(info())


PLAIN_ROUTES = {
    "/ping": ping,
    "/exec1/response": exec1("response"),
    "/exec1/stream": exec1("stream"),
    "/mw7": mw7,
}
if file_response_missing() is None:
    PLAIN_ROUTES["/exec1/file"] = exec1("file")
#: MW-3: the message of the exception a raising task raises (as in the raw suite).
MARKER = "inner task failed"
#: MW-3's task shapes, as in the raw suite's schedule set (tests/spec/webapp.py task_kinds).
RAISING_KINDS = ("sync", "async", "async-awaits")


def mw_raising(kind):
    """MW-3: the inner app's response whose task records ``task``, then raises."""

    def sync():
        effect("task")
        raise RuntimeError(MARKER)

    async def at_once():
        effect("task")
        raise RuntimeError(MARKER)

    async def after_await():
        await asyncio.sleep(0)
        effect("task")
        raise RuntimeError(MARKER)

    task = {"sync": sync, "async": at_once, "async-awaits": after_await}[kind]

    def respond():
        return PlainTextResponse("inner body", background=BackgroundTask(task))

    return respond


MW_ROUTES = {"/mw/response": mw_gated("response"), "/mw/stream": mw_gated("stream")}
MW_ROUTES.update(("/mw/raise/" + kind, mw_raising(kind)) for kind in RAISING_KINDS)


def leaves(exc):
    """The leaf exceptions of ``exc``, looking inside exception groups (as the raw suite's
    webapp.describe_exception does), each as its type and message."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, (list, tuple)) and inner:
        return [leaf for sub in inner for leaf in leaves(sub)]
    return [{"type": type(exc).__name__, "message": str(exc)[:200]}]


def _fastapi_routes(app):
    """The FastAPI-level scenarios: the injected BackgroundTasks is a parameter."""
    BackgroundTasks = fastapi.BackgroundTasks

    async def attach3(tasks: BackgroundTasks):
        """ATTACH-3 (FastAPI #11215): injected tasks and the Response's own BackgroundTask."""
        tasks.add_task(sync_effect("injected-1"))
        tasks.add_task(async_effect("injected-2"))
        return PlainTextResponse("x", background=BackgroundTask(sync_effect("own")))

    async def attach6(tasks: BackgroundTasks):
        """ATTACH-6: the injected object is the Response's background."""
        tasks.add_task(sync_effect("a"))
        tasks.add_task(sync_effect("b"))
        return PlainTextResponse("x", background=tasks)

    # ISO-1: one Response per variant, created once, returned on every request.
    shared = {
        "no-background": PlainTextResponse("shared"),
        "own-task": PlainTextResponse("shared", background=BackgroundTask(sync_effect("own"))),
    }

    def reuse(variant):
        async def endpoint(tasks: BackgroundTasks):
            tasks.add_task(sync_effect("request-" + query("n")))
            return shared[variant]

        return endpoint

    async def concurrent(tasks: BackgroundTasks):
        """ISO-6: one of many requests in flight at once; each task records its own run."""
        run = _RUN.get()
        for suffix in ("a", "b"):
            tasks.add_task(async_effect(f"{run}-{suffix}"))
        return {"run": run}

    app.add_api_route("/attach3", attach3, methods=["GET"])
    app.add_api_route("/concurrent", concurrent, methods=["GET"])
    app.add_api_route("/attach6", attach6, methods=["GET"])
    for variant in shared:
        app.add_api_route("/iso/" + variant, reuse(variant), methods=["GET"])


async def _respond(handler):
    result = handler()
    if inspect.isawaitable(result):
        result = await result
    return result


def _add_route(app, path, handler):
    if fastapi:
        async def endpoint():
            return await _respond(handler)

        app.add_api_route(path, endpoint, methods=["GET"])
    else:
        async def endpoint(request):
            return await _respond(handler)

        app.add_route(path, endpoint, methods=["GET"])


class PassThrough(BaseHTTPMiddleware):
    """The most common BaseHTTPMiddleware: ``dispatch`` returns what ``call_next`` gave."""

    async def dispatch(self, request, call_next):
        return await call_next(request)


def build(routes, middleware=()):
    app = fastapi.FastAPI() if fastapi else Starlette()
    for path, handler in sorted(routes.items()):
        _add_route(app, path, handler)
    for cls in middleware:
        app.add_middleware(cls)
    return app


plain_app = build(PLAIN_ROUTES)
if fastapi:
    _fastapi_routes(plain_app)
mw_app = build(MW_ROUTES, middleware=[PassThrough])


# -- the outermost wrapper -----------------------------------------------------------------


class _Root:
    """Routes ``/mw/`` to the middleware app, the rest to the plain app; logs each request.

    Sets the request in flight from the ``run`` query parameter, records ``disconnect`` when
    the app receives ``http.disconnect``, ``app-exception`` when the call raised, and
    ``app-returned`` when it ended: the host's signal that every task of the request is done.
    """

    def target(self, scope):
        if scope.get("type") != "http":
            return None  # lifespan: the apps have nothing to start
        raw = scope.get("query_string", b"")
        params = parse_qs(raw.decode("latin-1"))
        run = params.get("run", [None])[0]
        _current["run"] = run
        _RUN.set(run)
        _current["query"] = {k: v[-1] for k, v in params.items()}
        _current["asgi"] = {"asgi": scope.get("asgi"), "http_version": scope.get("http_version")}
        return run

    def pick(self, scope):
        return mw_app if scope.get("path", "").startswith("/mw/") else plain_app

    def watch(self, receive, run):
        async def watched():
            message = await receive()
            if message.get("type") == "http.disconnect":
                effect("disconnect", kind="marker", run=run, origin=run)
            return message

        return watched

    async def call(self, scope, receive, send):
        run = self.target(scope)
        inner = self.pick(scope) if scope.get("type") == "http" else plain_app
        if run is None:
            return await self.invoke(inner, scope, receive, send)
        try:
            await self.invoke(inner, scope, self.watch(receive, run), send)
        except BaseException as exc:
            effect("app-exception", kind="marker", run=run, origin=run,
                   type=type(exc).__name__, message=str(exc)[:200], leaves=leaves(exc))
            raise
        finally:
            effect("app-returned", kind="marker", run=run, origin=run)

    async def invoke(self, inner, scope, receive, send):
        if STARLETTE_ASGI2:
            await inner(scope)(receive, send)
        else:
            await inner(scope, receive, send)


class _Root2(_Root):
    def __call__(self, scope):
        async def instance(receive, send):
            await self.call(scope, receive, send)

        return instance


class _Root3(_Root):
    async def __call__(self, scope, receive, send):
        await self.call(scope, receive, send)


app = _Root2() if STARLETTE_ASGI2 else _Root3()
