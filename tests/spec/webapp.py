"""Minimal apps for the Starlette-level clauses, built on FastAPI or on pure Starlette.

The Starlette-level chapters (spec/execution.md, spec/middleware.md) are checked in FastAPI
cells and in pure-Starlette cells alike.  This module builds the same small app on either
framework: FastAPI when it is importable and the cell is not a Starlette cell
(``BGMATRIX_KIND``), pure Starlette otherwise.  Only APIs present from Starlette 0.3.3 to 1.x and
FastAPI 0.10.0 on are used: ``add_route`` / ``add_api_route``, ``add_middleware`` (wrapped by
hand before Starlette 0.5) and ``add_exception_handler`` (Starlette 1.0 removed the ``route``
and ``middleware`` decorators, and ``Starlette(routes=..., middleware=...)`` is newer than
0.9.9).

Starlette before 0.12 speaks ASGI 2, so the pure ASGI pieces here (the relaying middleware and
the exception probe) adapt to the interface of the Starlette they run with.

Python 3.8 compatible; no third-party imports besides the framework.
"""
import asyncio
import importlib
import inspect
import os

import starlette
from kind import starlette_only
from oracle import message_of
from starlette.applications import Starlette

from bgmatrix import vocabulary

# Outside Starlette-only cells FastAPI must import; an ImportError is the release's
# import-error, never a silent fallback to pure Starlette apps.
fastapi = None if starlette_only() else importlib.import_module("fastapi")

#: Which framework built the apps of this run; every test keeps it as an observation.
FRAMEWORK = {
    "framework": "fastapi" if fastapi else "starlette",
    "fastapi": getattr(fastapi, "__version__", None),
    "starlette": getattr(starlette, "__version__", None),
}


def is_asgi2(app):
    """ASGI 2 apps take ``(scope)`` and return an instance; ASGI 3 apps take three arguments."""
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else app.__call__
    try:
        return len(inspect.signature(call).parameters) == 1
    except (TypeError, ValueError):
        return False


#: Starlette < 0.12 chains its middleware as ASGI 2 callables.
STARLETTE_ASGI2 = is_asgi2(Starlette())


def build(record, routes, middleware=(), exception_handlers=()):
    """Build an app serving ``routes`` and note the framework in ``record``.

    ``routes`` maps a path to a handler: a function of no arguments (plain or ``async def``)
    that returns the response to send.  ``middleware`` is a sequence of ``(class, options)``
    given to ``add_middleware`` in order (the last one added is the outermost);
    ``exception_handlers`` is a sequence of ``(exception class or status code, handler)``.
    """
    record.observe("framework", FRAMEWORK)
    app = fastapi.FastAPI() if fastapi else Starlette()
    for path, handler in routes.items():
        _add_route(app, path, handler)
    for key, handler in exception_handlers:
        app.add_exception_handler(key, handler)
    for cls, options in middleware:
        if hasattr(app, "add_middleware"):
            app.add_middleware(cls, **options)
        else:  # Starlette before 0.5 has no add_middleware: wrap by hand, outermost last
            app = cls(app, **options)
    return app


async def _respond(handler):
    result = handler()
    if inspect.isawaitable(result):
        result = await result
    return result


def _add_route(app, path, handler):
    if fastapi:
        # A path operation with no parameters: FastAPI passes a returned Response through.
        async def endpoint():
            return await _respond(handler)

        app.add_api_route(path, endpoint, methods=["GET"])
    else:

        async def endpoint(request):
            return await _respond(handler)

        app.add_route(path, endpoint, methods=["GET"])


# -- the responses of EXEC-1, shared by the middleware tests -----------------------------------

#: The three ways a response sends its body (spec/execution.md#EXEC-1).
RESPONSE_CASES = ("response", "stream", "file")


async def chunks(count, size=8):
    """An async generator of ``count`` body chunks; Starlette 0.9 streams only async iterators."""
    for i in range(count):
        yield (str(i) * size).encode("ascii")


def big_file(folder, name="served.bin"):
    """A file of more than three of FileResponse's read chunks, so it is sent in pieces."""
    from starlette.responses import FileResponse

    path = os.path.join(str(folder), name)
    with open(path, "wb") as fh:
        fh.write(b"f" * (3 * getattr(FileResponse, "chunk_size", 64 * 1024) + 1))
    return path


def response_case(case, background, path=None):
    """A response of kind ``case`` (one of RESPONSE_CASES) carrying ``background``."""
    from starlette.responses import FileResponse, PlainTextResponse, StreamingResponse

    if case == "response":
        return PlainTextResponse("a plain body", background=background)
    if case == "stream":
        return StreamingResponse(chunks(3), media_type="text/plain", background=background)
    if case == "file":
        return FileResponse(path, background=background)
    raise ValueError("unknown response case %r" % (case,))


def file_response_missing(path):
    """Why ``FileResponse`` cannot serve ``path`` in this release, or None when it can.

    Starlette before 0.15 reads files with the optional ``aiofiles`` package and refuses to
    build a ``FileResponse`` without it; cells install only the framework.
    """
    from starlette.responses import FileResponse

    try:
        FileResponse(path)
    except (AssertionError, ImportError) as exc:
        return "FileResponse unavailable in this cell: %s" % (exc,)
    return None


def served_file(record, folder, case):
    """Write the file the response cases serve and return its path.

    Returns None, after grading the test's clauses n/a, when ``case`` is "file" and this
    release cannot build a FileResponse.
    """
    path = big_file(folder)
    missing = file_response_missing(path) if case == "file" else None
    if missing:
        record.observe("framework", FRAMEWORK)
        record.not_applicable(missing)
        return None
    return path


# -- a pure ASGI middleware ------------------------------------------------------------------


class _Relay(object):
    """Forwards every message to the real ``send`` unchanged, logging it as a ``relay`` event."""

    def __init__(self, app, harness):
        self.app = app
        self.harness = harness

    def relaying(self, send):
        async def relay(message):
            self.harness.log(
                "relay",
                message=message.get("type"),
                more_body=bool(message.get("more_body", False)),
            )
            await send(message)

        return relay


class _Relay2(_Relay):
    def __call__(self, scope):
        inner = self.app(scope)

        async def instance(receive, send):
            await inner(receive, self.relaying(send))

        return instance


class _Relay3(_Relay):
    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, self.relaying(send))


#: Use as ``(RelayMiddleware, {"harness": harness})`` in :func:`build`.
RelayMiddleware = _Relay2 if STARLETTE_ASGI2 else _Relay3


# -- what leaves the application -----------------------------------------------------------


def describe_exception(exc):
    """Type, message and the leaf exceptions of ``exc`` (looking inside exception groups)."""
    leaves = []

    def walk(e):
        inner = getattr(e, "exceptions", None)
        if isinstance(inner, (list, tuple)) and inner:
            for sub in inner:
                walk(sub)
        else:
            leaves.append({"type": type(e).__name__, "message": message_of(e)})

    walk(exc)
    return {"type": type(exc).__name__, "message": message_of(exc), "leaves": leaves}


class ExceptionProbe(object):
    """An outermost ASGI 3 wrapper that notes what left the app, then re-raises it.

    The harness keeps only the type and message of an escaping exception; a task's error that
    comes out inside an exception group counts as propagated (MW-3), so the group is opened
    here.  ``seen`` is None when the app returned normally.
    """

    def __init__(self, app):
        self.app = app
        self.seen = None

    async def __call__(self, scope, receive, send):
        try:
            if is_asgi2(self.app):
                await self.app(scope)(receive, send)
            else:
                await self.app(scope, receive, send)
        except BaseException as exc:
            self.seen = describe_exception(exc)
            raise


# -- schedules (spec/index.md#schedules) ------------------------------------------------------


def task_kinds(harness, fail_with=None):
    """The task shapes of the schedule set (spec/index.md#schedules): ``sync`` (starts late,
    in a worker thread), ``async`` (acts at once) and ``async-awaits`` (awaits once first);
    each records the effect ``task`` and, with ``fail_with``, then raises RuntimeError."""

    def sync():
        harness.effect("task")
        if fail_with:
            raise RuntimeError(fail_with)

    async def at_once():
        harness.effect("task")
        if fail_with:
            raise RuntimeError(fail_with)

    async def after_await():
        await asyncio.sleep(0)
        harness.effect("task")
        if fail_with:
            raise RuntimeError(fail_with)

    return {"sync": sync, "async": at_once, "async-awaits": after_await}


def schedules(harness, fail_with=None):
    """Every (schedule name, send yields, task) of the set, in a fixed order."""
    for kind, task in task_kinds(harness, fail_with).items():
        for yields in vocabulary.SEND_YIELDS:
            yield "%s/send-yields-%d" % (kind, yields), yields, task
