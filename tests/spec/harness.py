"""A raw ASGI driver with one ordered event log.

The suite must observe every release from 2019 on the same terms, so it drives applications
directly over ASGI (2 or 3) instead of through Starlette's TestClient or httpx, whose transports
changed across releases.  Every ``send`` message, every ``receive`` answer, every task effect,
every warning and the application's own exception land in one ordered log; the order of that
log is the evidence every verdict is derived from.

Runs unchanged on Python 3.8-3.13: no third-party imports, no newer syntax.
"""
import asyncio
import contextvars
import inspect
import logging
import threading
import warnings

from oracle import message_of

#: Default per-scenario budget, in seconds.  A scenario that exceeds it is recorded as a
#: ``timeout`` outcome; it never stalls the run.
DEFAULT_TIMEOUT = 10.0

#: When the client's ``http.disconnect`` becomes available to ``receive``.
DISCONNECT_MODES = (
    "after-response",  # once the final body message was sent (what uvicorn does)
    "never",  # the client keeps the connection open; receive blocks until cancelled
    "after-first-body",  # the client goes away after the first body message (mid-stream)
    "immediately",  # the client is gone right after sending its request body
)

#: Headers whose values come from the clock (a served file's mtime, the time of day): kept as
#: present, with the value replaced, so that two runs of one release observe the same thing.
CLOCK_HEADERS = ("date", "last-modified", "etag")

_BODY_EXCERPT = 200  # bytes of each body message kept in the log: enough to identify it


#: Which concurrent request's application call a coroutine runs in (Harness.concurrent).
_REQUEST = contextvars.ContextVar("bgmatrix_request", default=None)

#: The loggers whose records count as a signal: the frameworks' own (children included).
SIGNAL_LOGGERS = ("fastapi", "starlette")


class _LogRecorder(logging.Handler):
    """Keeps the WARNING-or-above records of the frameworks' loggers during one request, in
    the shape of a recorded warning (``category`` names the logger, ``log_level`` marks it)."""

    def __init__(self):
        logging.Handler.__init__(self, level=logging.WARNING)
        self.signals = []

    def emit(self, record):
        self.signals.append({
            "category": "log:" + record.name,
            "log_level": record.levelname,
            "message": record.getMessage(),
            "user_warning": False,
        })


class ScenarioTimeout(Exception):
    """A scenario did not finish within its budget."""


def _is_asgi2(app):
    """ASGI 2 apps take ``(scope)`` and return an instance; ASGI 3 apps take three arguments."""
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else app.__call__
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False
    return len(params) == 1


class Exchange(object):
    """What one request looked like from the server's side."""

    def __init__(self, index):
        self.index = index
        self.status = None
        self.headers = []
        self.body = b""
        self.events = []
        self.warnings = []
        self.app_exception = None
        self.dropped_sends = 0
        # Answers to ``receive`` after the final body: counted, not placed in ``events``. A
        # server answers them at once, concurrently with a sync task in a worker thread, so
        # their place among the task's effects is the OS scheduler's choice, not the
        # framework's, and would differ between two runs that saw the same behaviour.
        self.disconnects_after_response = 0

    @property
    def effects(self):
        """Names of the task effects seen during this request, in order."""
        return [e["name"] for e in self.events if e["kind"] == "effect"]

    def excerpt(self, data):
        """The start of a body as text; an encoded body (gzip carries a timestamp) only by
        its encoding and size, so that two runs of one release observe the same thing."""
        encoding = self.header("content-encoding")
        if encoding:
            return "<%s-encoded, %d bytes>" % (encoding[0], len(data))
        return data[:_BODY_EXCERPT].decode("utf-8", "replace")

    def header(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def to_json(self):
        out = {
            "request": self.index,
            "status": self.status,
            "headers": [[k, v] for k, v in self.headers],
            "body": self.excerpt(self.body),
            "effects": self.effects,
            "warnings": list(self.warnings),
            "app_exception": self.app_exception,
            "dropped_sends": self.dropped_sends,
            "events": list(self.events),
        }
        if self.disconnects_after_response:  # only where it happened: other records unchanged
            out["disconnects_after_response"] = self.disconnects_after_response
        return out


class Harness(object):
    """Owns the event log; builds task callables that record into it; drives apps."""

    def __init__(self, timeout=DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._current = None
        self.exchanges = []
        self.hung = False  # a scenario timed out and may have left a thread running

    # -- the log ---------------------------------------------------------------------------
    def log(self, kind, **fields):
        with self._lock:
            if self._current is None:
                return
            event = {"seq": len(self._current.events), "kind": kind}
            event.update(fields)
            self._current.events.append(event)

    # -- task effects ----------------------------------------------------------------------
    def effect(self, name):
        """Record that the task ``name`` ran.  Call it from inside a task."""
        self.log("effect", name=name)

    def sync_task(self, name):
        """A plain function that records ``name`` when called."""

        def task(*args, **kwargs):
            self.effect(name)

        task.__name__ = task.__qualname__ = "task_" + name.replace("-", "_")
        return task

    def async_task(self, name):
        """An ``async def`` function that records ``name`` when awaited."""

        async def task(*args, **kwargs):
            self.effect(name)

        task.__name__ = task.__qualname__ = "task_" + name.replace("-", "_")
        return task

    # -- driving ---------------------------------------------------------------------------
    def request(
        self,
        app,
        method="GET",
        path="/",
        headers=(),
        body=b"",
        disconnect="after-response",
        spec_version="2.3",
        timeout=None,
        send_yields=1,
    ):
        """Send one HTTP request to ``app`` and return its :class:`Exchange`.

        ``disconnect`` chooses when ``receive`` answers ``http.disconnect``; ``spec_version``
        is advertised in the scope (with "2.4", ``send`` raises ``OSError`` once the client
        is gone, as the ASGI spec allows; otherwise such sends are dropped and counted).
        ``send_yields`` is how many times ``send`` hands the event loop back before it returns:
        one of the schedules of spec/index.md#schedules (0: a server whose write completes
        without yielding, 1: the default, more: a slow socket).
        """
        if disconnect not in DISCONNECT_MODES:
            raise ValueError("unknown disconnect mode %r" % (disconnect,))
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("ascii"),
            "root_path": "",
            "query_string": query.encode("ascii"),
            "headers": [(b"host", b"testserver")]
            + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        return self._run(
            app, scope, lambda: _HttpPeer(self, body, disconnect, spec_version, send_yields),
            timeout,
        )

    def concurrent(self, app, paths, timeout=None):
        """Send one GET per path to ``app`` all at once, in one event loop, and return the
        status of each request, in the order of ``paths``.  During the run,
        :meth:`current_request` names the request whose application call is running (a task
        calls it to say where it ran).

        Each request is its own ``asyncio`` task, so each has its own copy of the context:
        a task started by request *i*'s call sees *i* even while 999 others are in flight.
        """
        statuses = [None] * len(paths)

        async def one(index, path):
            _REQUEST.set(index)
            path, _, query = path.partition("?")
            scope = {
                "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
                "raw_path": path.encode("ascii"), "root_path": "",
                "query_string": query.encode("ascii"), "headers": [(b"host", b"testserver")],
                "client": ("127.0.0.1", 50000 + index % 10000), "server": ("testserver", 80),
            }
            sent = asyncio.Event()
            requested = [False]

            async def receive():
                if not requested[0]:
                    requested[0] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                await sent.wait()
                return {"type": "http.disconnect"}

            async def send(message):
                if message["type"] == "http.response.start":
                    statuses[index] = message["status"]
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    sent.set()
                await asyncio.sleep(0)

            if _is_asgi2(app):
                await app(scope)(receive, send)
            else:
                await app(scope, receive, send)

        async def all_requests():
            await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(asyncio.wait_for(
                all_requests(), self.timeout if timeout is None else timeout))
        except asyncio.TimeoutError:
            self.hung = True
            raise ScenarioTimeout("%d concurrent requests did not finish within %ss"
                                  % (len(paths), timeout or self.timeout)) from None
        finally:
            _close_loop(loop)
            asyncio.set_event_loop(None)
        return statuses

    @staticmethod
    def current_request():
        """The index of the :meth:`concurrent` request whose call runs in this context."""
        return _REQUEST.get()

    def websocket(self, app, path="/", messages=(), timeout=None):
        """Open a WebSocket, send ``messages`` (text), and wait for the app to close it."""
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode("ascii"),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "subprotocols": [],
        }
        return self._run(app, scope, lambda: _WebSocketPeer(self, list(messages)), timeout)

    def _run(self, app, scope, make_peer, timeout):
        exchange = Exchange(len(self.exchanges))
        self.exchanges.append(exchange)
        with self._lock:
            self._current = exchange
        loop = asyncio.new_event_loop()
        # Python 3.8/3.9 bind asyncio primitives to the current loop at creation, so the peer
        # is built only once this request's loop is the current one.
        asyncio.set_event_loop(loop)
        peer = make_peer()
        # The spec's signal is a warning or a log record through the frameworks' own loggers
        # (spec/index.md#terms): both are kept, in the order they were emitted.
        logged = _LogRecorder()
        for name in SIGNAL_LOGGERS:
            logging.getLogger(name).addHandler(logged)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    loop.run_until_complete(
                        asyncio.wait_for(
                            self._call(app, scope, peer),
                            self.timeout if timeout is None else timeout,
                        )
                    )
                except asyncio.TimeoutError:
                    self.hung = True
                    self.log("timeout")
                    raise ScenarioTimeout(
                        "scenario did not finish within %ss" % (timeout or self.timeout)
                    ) from None
                finally:
                    for w in caught:
                        exchange.warnings.append(
                            {
                                "category": w.category.__name__,
                                "message": str(w.message),
                                # the spec's qualifying warnings are UserWarning and subclasses
                                "user_warning": issubclass(w.category, UserWarning),
                            }
                        )
                    exchange.warnings.extend(logged.signals)
        finally:
            for name in SIGNAL_LOGGERS:
                logging.getLogger(name).removeHandler(logged)
            _close_loop(loop)
            asyncio.set_event_loop(None)
            with self._lock:
                self._current = None
        return exchange

    async def _call(self, app, scope, peer):
        try:
            if _is_asgi2(app):
                instance = app(scope)
                await instance(peer.receive, peer.send)
            else:
                await app(scope, peer.receive, peer.send)
        except Exception as exc:  # the app's own failure is evidence, not a harness error
            message = message_of(exc)
            self._current.app_exception = {"type": type(exc).__name__, "message": message}
            self.log("app-exception", type=type(exc).__name__, message=message)
        self.log("app-returned")


class _HttpPeer(object):
    """The server and client side of one HTTP request."""

    def __init__(self, harness, body, disconnect, spec_version, send_yields=1):
        self.h = harness
        self.send_yields = send_yields
        self.body = body
        self.mode = disconnect
        self.raise_on_closed = spec_version >= "2.4"
        self.request_sent = False
        self.gone = asyncio.Event()  # the client has disconnected
        self.first_body_seen = False
        self.response_complete = False
        if disconnect == "immediately":
            self.gone.set()

    async def receive(self):
        if not self.request_sent:
            self.request_sent = True
            message = {"type": "http.request", "body": self.body, "more_body": False}
            self.h.log("receive", message="http.request")
            return message
        if self.mode == "never":
            # Block like a client that keeps the connection open, until cancelled.
            await asyncio.Event().wait()
        await self.gone.wait()
        if self.response_complete and self.h._current is not None:
            self.h._current.disconnects_after_response += 1  # see Exchange
        else:
            self.h.log("receive", message="http.disconnect")
        return {"type": "http.disconnect"}

    async def send(self, message):
        ex = self.h._current
        kind = message["type"]
        if self.gone.is_set() and kind.startswith("http.response"):
            if self.raise_on_closed:
                self.h.log("send-failed", message=kind)
                raise OSError("client disconnected")
            ex.dropped_sends += 1
            fields = {"message": kind}
            if kind == "http.response.start":
                fields["status"] = message["status"]  # a second start is evidence too
            self.h.log("send-dropped", **fields)
            return
        if kind == "http.response.start":
            ex.status = message["status"]
            ex.headers = [
                (
                    bytes(k).decode("latin-1"),
                    "<clock>" if bytes(k).decode("latin-1").lower() in CLOCK_HEADERS
                    else bytes(v).decode("latin-1"),
                )
                for k, v in message.get("headers", [])
            ]
            self.h.log("send", message=kind, status=ex.status)
        elif kind == "http.response.body":
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            ex.body += chunk
            self.h.log(
                "send", message=kind, more_body=more, size=len(chunk), body=ex.excerpt(chunk)
            )
            if not self.first_body_seen:
                self.first_body_seen = True
                if self.mode == "after-first-body":
                    self.gone.set()
            if not more:
                self.response_complete = True
                if self.mode == "after-response":
                    self.gone.set()
        else:
            self.h.log("send", message=kind)
        # Let other coroutines (e.g. a middleware's disconnect listener) run as a real server's
        # write would: as many times as the schedule says (never, once, several times).
        for _ in range(self.send_yields):
            await asyncio.sleep(0)


class _WebSocketPeer(object):
    def __init__(self, harness, messages):
        self.h = harness
        self.queue = [{"type": "websocket.connect"}] + [
            {"type": "websocket.receive", "text": m} for m in messages
        ]
        self.closed = asyncio.Event()

    async def receive(self):
        if self.queue:
            message = self.queue.pop(0)
            self.h.log("receive", message=message["type"])
            return message
        await self.closed.wait()
        self.h.log("receive", message="websocket.disconnect")
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message):
        kind = message["type"]
        fields = {"message": kind}
        if "text" in message and message["text"] is not None:
            fields["text"] = message["text"][:_BODY_EXCERPT]
        self.h.log("send", **fields)
        if kind == "websocket.close":
            self.closed.set()
        await asyncio.sleep(0)


def _close_loop(loop):
    """Close a loop without waiting on threads a hung scenario may have left behind."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
