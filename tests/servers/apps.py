"""The probe app: plain ASGI, no framework, served by each server wire mode runs.

Wire mode's labels are about a framework *on* a server; where a server's label differs from
the raw-ASGI one, the difference is either the framework meeting a server that delivers the
protocol differently from the raw harness, or a fault.  These probes measure the server alone,
so a disagreement can be explained by a fact about the server, with no framework involved:

- ``/scope``: what the server puts in the scope (``extensions``, ``asgi.spec_version``) and
  whether ``sniffio`` finds the event loop inside the app (anyio, and so Starlette from 0.15,
  needs it), answered as the JSON body;
- ``/after-final``: after the final body message, does the app keep running until its gate
  opens, or is it cancelled (``mode=close``: the client has left by then)?
- ``/disconnect``: after the final body message, what does ``receive()`` return within
  :data:`RECEIVE_WAIT` s: ``http.disconnect`` or nothing?
- ``/held-final``: the whole body is sent with ``more_body`` and the final, empty message is
  held at the gate: does the client have the complete body before it (``Content-Length`` or
  chunked framing)?
- ``/send-after-close``: a stream whose client leaves after the first chunk; once the gate
  opens, what ``receive()`` returns and whether the next ``send`` raises;
- ``/final-send``: a chunked stream ended normally: does the final ``send`` raise?
- ``/close-before-final``: the whole ``Content-Length`` body is sent with ``more_body`` and
  the client closes once it holds it: does ``receive()`` return ``http.disconnect`` before the
  final, empty message is sent (the moment Starlette issue #1438 is about)?
- ``/pending-receive``: a ``receive()`` started before a chunked stream and still pending when
  the stream ends: what does it return, or raise, once the response is complete?
- ``/cancel-receive``: a task waiting in ``receive()`` is cancelled with a message, as anyio's
  cancel scopes do (Python 3.9+): does the ``CancelledError`` that reaches the task carry that
  message (``kept-message``), or the server's own?  anyio treats a cancellation without its
  message as foreign and lets it propagate.

Each probe appends what it saw to ``facts.jsonl`` in ``BGMATRIX_WIRE_DIR`` (one JSON object a
line, ``{"run", "name", "value"}``); the host opens ``gate-<run>`` files as wire mode does.
Gates are polled, never slept on as proof.  Python 3.8+, standard library only.
"""
import asyncio
import json
import os
import sys
from urllib.parse import parse_qs

INTERFACE = "asgi3"  # read by tests/wire/serve.py: servers that ask are told ASGI 3
WIRE_DIR = os.environ.get("BGMATRIX_WIRE_DIR") or os.getcwd()
FACTS = os.path.join(WIRE_DIR, "facts.jsonl")
GATE_DEADLINE = 3.0  # seconds a probe holds at its gate
RECEIVE_WAIT = 1.0  # seconds a probe waits for receive() after the response
_POLL = 0.005  # seconds between looks at a gate file


def note(run, name, value):
    with open(FACTS, "a") as out:
        out.write(json.dumps({"run": run, "name": name, "value": value}) + "\n")


async def gate(run):
    """Wait for the host's gate file: ``released`` or ``gate-timeout``."""
    path = os.path.join(WIRE_DIR, "gate-" + run)
    for _ in range(int(GATE_DEADLINE / _POLL)):
        if os.path.exists(path):
            return "released"
        await asyncio.sleep(_POLL)
    return "gate-timeout"


async def drain(receive):
    """Read the request body, so that the next ``receive()`` is about the connection."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def next_message(receive, wait=RECEIVE_WAIT):
    try:
        message = await asyncio.wait_for(receive(), wait)
    except asyncio.TimeoutError:
        return "nothing"
    return message.get("type", "?")


async def attempt(send, message):
    """``ok``, or the name of the exception ``send`` raised."""
    try:
        await send(message)
    except Exception as exc:  # the fact is which exception, if any
        return type(exc).__name__
    return "ok"


def start(headers=()):
    return {"type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/plain")] + list(headers)}


def body(data, more):
    return {"type": "http.response.body", "body": data, "more_body": more}


def async_library():
    try:
        import sniffio
    except ImportError:
        return "no-sniffio"
    try:
        return sniffio.current_async_library()
    except Exception as exc:
        return type(exc).__name__


async def scope_probe(scope, send):
    asgi = scope.get("asgi") or {}
    facts = {
        "extensions": sorted(scope["extensions"]) if "extensions" in scope else None,
        "spec_version": asgi.get("spec_version"),
        "async_library": async_library(),
    }
    data = json.dumps(facts, sort_keys=True).encode()
    await send(start([(b"content-length", str(len(data)).encode())]))
    await send(body(data, False))


async def after_final(run, send):
    await send(start([(b"content-length", b"2")]))
    await send(body(b"ok", False))
    try:
        note(run, "after-final", await gate(run))
    except asyncio.CancelledError:
        note(run, "after-final", "cancelled")
        raise


async def disconnect(run, send, receive):
    await send(start([(b"content-length", b"2")]))
    await send(body(b"ok", False))
    note(run, "disconnect", await next_message(receive))


async def held_final(run, send, framing):
    headers = [(b"content-length", b"4")] if framing == "length" else []
    await send(start(headers))
    await send(body(b"held", True))
    note(run, "held-final", await gate(run))
    await send(body(b"", False))


async def send_after_close(run, send, receive):
    await send(start())
    await send(body(b"x" * 1024, True))
    await gate(run)
    note(run, "receive", await next_message(receive, 0.5))
    note(run, "send", await attempt(send, body(b"x" * 1024, True)))
    note(run, "final-send", await attempt(send, body(b"", False)))


async def final_send(run, send):
    await send(start())
    await send(body(b"x" * 1024, True))
    note(run, "final-send", await attempt(send, body(b"", False)))


async def close_before_final(run, send, receive):
    await send(start([(b"content-length", b"4")]))
    await send(body(b"held", True))
    note(run, "close-before-final", await next_message(receive))
    await attempt(send, body(b"", False))


async def pending_receive(run, send, receive):
    async def listen():
        try:
            return await receive()
        except BaseException as exc:  # the fact is what reached the app, cancellation included
            return {"type": type(exc).__name__}

    waiting = asyncio.ensure_future(listen())
    await asyncio.sleep(0)  # the listener is waiting in receive() before the stream starts
    await send(start())
    await send(body(b"x" * 1024, True))
    await send(body(b"", False))
    try:
        message = await asyncio.wait_for(asyncio.shield(waiting), RECEIVE_WAIT)
        note(run, "pending-receive", message.get("type", "?"))
    except asyncio.TimeoutError:
        waiting.cancel()
        note(run, "pending-receive", "nothing")


async def cancel_receive(run, send, receive):
    async def listen():
        return await receive()

    waiting = asyncio.ensure_future(listen())
    await asyncio.sleep(0)  # the listener is waiting in receive()
    if sys.version_info < (3, 9):
        outcome = "no-cancel-message"  # Task.cancel(msg) is new in 3.9
        waiting.cancel()
    else:
        waiting.cancel("probe-cancel")
    try:
        await waiting
        outcome = "returned"
    except asyncio.CancelledError as exc:
        if sys.version_info >= (3, 9):
            given = exc.args[0] if exc.args else None
            outcome = ("kept-message" if given == "probe-cancel" else
                       "lost-message" if given is None else "message:" + str(given))
    note(run, "cancel-receive", outcome)
    await send(start([(b"content-length", b"2")]))
    await send(body(b"ok", False))


async def lifespan(receive, send):
    """Answer startup and shutdown: a server that waits for startup (hypercorn before 0.9)
    would not listen until its timeout otherwise."""
    while True:
        message = await receive()
        kind = message["type"].rpartition(".")[2]  # startup, shutdown
        await send({"type": "lifespan." + kind + ".complete"})
        if kind == "shutdown":
            return


async def probe(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return  # nothing else to probe
    query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    run, path = query.get("run", "-"), scope["path"]
    await drain(receive)
    if path in ("/ping", "/scope"):
        await scope_probe(scope, send)
    elif path == "/after-final":
        await after_final(run, send)
    elif path == "/disconnect":
        await disconnect(run, send, receive)
    elif path == "/held-final":
        await held_final(run, send, query.get("framing", "length"))
    elif path == "/send-after-close":
        await send_after_close(run, send, receive)
    elif path == "/final-send":
        await final_send(run, send)
    elif path == "/close-before-final":
        await close_before_final(run, send, receive)
    elif path == "/pending-receive":
        await pending_receive(run, send, receive)
    elif path == "/cancel-receive":
        await cancel_receive(run, send, receive)
    else:
        await send(start([(b"content-length", b"0")]))
        await send(body(b"", False))
    note(run, "app-returned", path)


app = probe  # ASGI 3: what every server is told, or detects from the coroutine function


def asgi2(scope):
    """The probe as an ASGI 2 app, for servers older than ASGI 3 (tests/servers/serve.py
    chooses), which call ``app(scope)`` and await ``instance(receive, send)``."""
    return lambda receive, send: probe(scope, receive, send)
