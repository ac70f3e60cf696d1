"""Resolution: the requirements any resolution of FastAPI #11215 must meet (RES-3, RES-6 to RES-8).

spec/resolution.md.  RES-1 and RES-2 are graded with the attachment cases (test_attachment.py),
RES-4 and RES-5 with the isolation cases (test_isolation.py).  Here: no false warning in the
ordinary cases, the order when both sets run, the same outcome at every attach site, and the
per-task telemetry span.  Every feature (streams built by FastAPI, ``app.frontend()``,
telemetry) is found by capability; a release without it grades the clause n/a.
"""
import inspect

import pytest
from kind import require_fastapi
from labels_life import false_warning_label, span_label
from oracle import conflict_label, runs_label

from bgmatrix import vocabulary

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, Depends, FastAPI  # noqa: E402
from fastapi import routing as fastapi_routing  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.background import BackgroundTasks as StarletteTasks  # noqa: E402
from starlette.responses import PlainTextResponse, StreamingResponse  # noqa: E402

BACKGROUND_TASK_SPAN = "fastapi.background_task"


def labelled(cases):
    """``{"case": "label"}`` as one readable label, in the order the cases were run."""
    return " ".join("%s:%s" % item for item in cases.items())


def grade_cases(record, key, labels, ungraded, none_reason):
    """Grade the expectation ``key`` over per-case labels: labels in ``ungraded`` do not apply;
    the clause conforms when the expectation accepts every case that applies; n/a when none
    applies."""
    applies = {case: lb for case, lb in labels.items() if lb not in ungraded}
    if not applies:
        record.not_applicable("%s (%s)" % (none_reason, labelled(labels)),
                              clauses=[vocabulary.clause_of(key)])
        return
    record.grade(key, labelled(labels), graded=list(applies.values()))


# -- RES-3: ordinary cases ----------------------------------------------------------------------
@pytest.mark.clause("RES-3")
def test_no_warning_in_ordinary_cases(record, harness):
    app = FastAPI()

    @app.get("/data")
    async def data(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("a"))
        tasks.add_task(harness.sync_task("b"))
        return {"ok": True}

    @app.get("/response")
    async def response(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("a"))
        tasks.add_task(harness.sync_task("b"))
        return PlainTextResponse("x")

    @app.get("/identity")
    async def identity(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("a"))
        tasks.add_task(harness.sync_task("b"))
        return PlainTextResponse("x", background=tasks)

    labels, evidence = {}, {}
    for case in ("data", "response", "identity"):
        ex = evidence[case] = harness.request(app, path="/" + case)
        labels[case] = false_warning_label(ex.effects, ["a", "b"], ex.warnings)
    record.observe("cases", evidence)
    grade_cases(record, "RES-3", labels, ("not-all-once",),
                "no case ran every task exactly once")


# -- RES-6 (and RES-3): the conflict at the request handler -------------------------------------
def conflict_app(harness):
    """The conflict cases of ATTACH-3, ATTACH-4 and ATTACH-8: (path, injected, own) each."""

    def dep(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("dep"))

    app = FastAPI()

    @app.get("/task")
    async def task(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected-1"))
        tasks.add_task(harness.sync_task("injected-2"))
        return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))

    @app.get("/tasks")
    async def tasks_(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected-1"))
        own = StarletteTasks()
        own.add_task(harness.sync_task("own-1"))
        own.add_task(harness.sync_task("own-2"))
        return PlainTextResponse("x", background=own)

    # Path-operation ``dependencies=[...]`` is newer than 0.10.0; a parameter works everywhere.
    @app.get("/dependency")
    async def dependency(_=Depends(dep)):
        return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))

    return app, [
        ("task", ["injected-1", "injected-2"], ["own"]),
        ("tasks", ["injected-1"], ["own-1", "own-2"]),
        ("dependency", ["dep"], ["own"]),
    ]


@pytest.mark.clause("RES-6", "RES-3")
def test_order_when_both_sets_run(record, harness):
    app, cases = conflict_app(harness)
    labels, evidence = {}, {}
    for case, injected, own in cases:
        ex = evidence[case] = harness.request(app, path="/" + case)
        labels[case] = conflict_label(ex.effects, injected, own, ex.warnings)
    record.observe("cases", evidence)
    not_merged = tuple(set(labels.values()) - set(vocabulary.MERGE_LABELS))
    # Order exists only where both sets ran; the labels say whether anything merged.
    grade_cases(record, "RES-6", labels, not_merged, "release does not merge: nothing to order")
    # A conflict in which every task ran once is a request with nothing lost: no warning.
    grade_cases(record, "RES-3/conflict", labels, not_merged,
                "a task was lost in every conflict case: no warning can be false")


# -- RES-7: every attach site --------------------------------------------------------------------
def streams_generators():
    """FastAPI builds the stream itself where a generator route knows whether it is JSON Lines
    (the capability test_attachment_sites.py uses for ATTACH-11)."""

    def probe():
        yield b""

    return hasattr(fastapi_routing.APIRoute("/probe", probe), "is_json_stream")


def stream_sites():
    """(site name, route keyword arguments, one item to yield) for each stream FastAPI builds."""
    if not streams_generators():
        return []
    sites = [("stream-raw", {"response_class": StreamingResponse}, b"chunk\n"),
             ("stream-jsonl", {}, {"item": 1})]
    try:
        from fastapi.sse import EventSourceResponse
    except ImportError:
        return sites
    return sites + [("stream-sse", {"response_class": EventSourceResponse}, {"item": 1})]


def add_stream_route(app, harness, path, kwargs, item, add_endpoint_task):
    async def endpoint(tasks: BackgroundTasks):
        if add_endpoint_task:
            tasks.add_task(harness.sync_task("endpoint"))
        yield item

    app.add_api_route(path, endpoint, methods=["GET"], **kwargs)


@pytest.mark.clause("RES-7")
def test_every_attach_site_behaves_the_same(record, harness, tmp_path):
    streams = stream_sites()
    frontend = hasattr(FastAPI, "frontend")
    if not streams and not frontend:
        record.not_applicable("release has no attach site besides the request handler")
        return

    calls = []  # whether the dependency ran for the current request, kept as evidence

    def dep(tasks: BackgroundTasks):
        calls.append("dep")
        tasks.add_task(harness.sync_task("dep"))

    # An app-level dependency reaches every site alike, app.frontend() groups included.
    app = FastAPI(dependencies=[Depends(dep)])

    @app.get("/handler/dependency-only")
    async def dependency_only():
        return {"ok": True}

    @app.get("/handler/ordinary")
    async def ordinary(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("endpoint"))
        return {"ok": True}

    @app.get("/handler/identity")
    async def identity(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("endpoint"))
        return PlainTextResponse("x", background=tasks)

    @app.get("/handler/conflict")
    async def conflict(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("endpoint"))
        return PlainTextResponse("x", background=BackgroundTask(harness.sync_task("own")))

    # (case, site, path, request headers): each case as every site can produce it.
    requests = [
        ("dependency-only", "handler", "/handler/dependency-only", ()),
        ("ordinary", "handler", "/handler/ordinary", ()),
        ("identity", "handler", "/handler/identity", ()),
    ]
    for site, kwargs, item in streams:
        for case, add_task in (("dependency-only", False), ("ordinary", True)):
            path = "/%s/%s" % (site, case)
            add_stream_route(app, harness, path, kwargs, item, add_task)
            requests.append((case, site, path, ()))
    if frontend:
        # A frontend group serves files: only dependencies can add tasks there.
        (tmp_path / "index.html").write_text("<p>frontend-index</p>")
        app.frontend("/", directory=str(tmp_path))
        requests.append(("dependency-only", "frontend", "/", (("accept", "text/html"),)))

    expected = {"dependency-only": ["dep"], "ordinary": ["dep", "endpoint"],
                "identity": ["dep", "endpoint"]}
    labels, evidence = {}, {}

    def send(case, site, path, headers=()):
        del calls[:]
        ex = harness.request(app, path=path, headers=headers)
        evidence["%s@%s" % (case, site)] = {"exchange": ex, "dependency_called": bool(calls)}
        return ex

    for case, site, path, headers in requests:
        ex = send(case, site, path, headers)
        labels.setdefault(case, {})[site] = runs_label(ex.effects, expected[case], ex.warnings)
    for site, _, _ in streams:
        # A stream's response is FastAPI's own object, whose background *is* the injected
        # collection: its ordinary case is the identity case too.
        labels["identity"][site] = labels["ordinary"][site]
    # No site but the handler lets a Response with its own background arise (a stream's and
    # a frontend file's response are built by FastAPI): the conflict is recorded, not compared.
    ex = send("conflict", "handler", "/handler/conflict")
    at_handler = conflict_label(ex.effects, ["dep", "endpoint"], ["own"], ex.warnings)
    record.observe("requests", evidence)
    record.observe("labels", {"cases": labels, "conflict@handler": at_handler})

    differing = [
        "%s@%s=%s" % (case, site, label)
        for case, by_site in labels.items()
        for site, label in by_site.items()
        if label != by_site["handler"]
    ]
    handler = combine_handler(labels)
    label = ("same as handler (%s)" % handler if not differing
             else "differs from handler (%s): %s" % (handler, " ".join(differing)))
    record.grade("RES-7", label, graded="differs" if differing else "same")


def combine_handler(labels):
    return " ".join("%s:%s" % (case, by_site["handler"]) for case, by_site in labels.items())


# -- RES-8: the per-task telemetry span ----------------------------------------------------------
def telemetry_support():
    """The reason RES-8 does not apply, or None: the release's own BackgroundTasks must wrap
    each task (its own ``__call__``) and FastAPI must accept a tracer provider."""
    # Older releases export Starlette's class itself, whose ``__call__`` opens no span.
    if BackgroundTasks is StarletteTasks or "__call__" not in vars(BackgroundTasks):
        return "release's BackgroundTasks does not wrap tasks: no per-task telemetry"
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return "release has no FastAPI(telemetry=...) to give a tracer provider"
    try:
        from opentelemetry import trace  # noqa: F401
    except ImportError:
        return "release has telemetry but opentelemetry-api is not importable"
    return None


def recording_provider():
    """A minimal TracerProvider from opentelemetry-api alone (the cells have no SDK): spans
    keep their name and parent, so a task can tell which spans it runs inside."""
    import contextlib
    import random

    from opentelemetry import trace

    class RecordingSpan(trace.Span):
        def __init__(self, name, parent):
            self.name = name
            self.parent = parent if isinstance(parent, RecordingSpan) else None
            self.ended = False
            self._context = trace.SpanContext(
                trace_id=random.getrandbits(128) or 1,
                span_id=random.getrandbits(64) or 1,
                is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )

        def end(self, end_time=None):
            self.ended = True

        def get_span_context(self):
            return self._context

        def set_attributes(self, attributes):
            pass

        def set_attribute(self, key, value):
            pass

        def add_event(self, name, attributes=None, timestamp=None):
            pass

        def update_name(self, name):
            self.name = name

        def is_recording(self):
            return not self.ended

        def set_status(self, status, description=None):
            pass

        def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
            pass

    class RecordingTracer(trace.Tracer):
        def start_span(self, name, context=None, *args, **kwargs):
            return RecordingSpan(name, trace.get_current_span(context))

        @contextlib.contextmanager
        def start_as_current_span(self, name, context=None, *args, **kwargs):
            span = self.start_span(name, context)
            with trace.use_span(span, end_on_exit=kwargs.get("end_on_exit", True),
                                record_exception=False, set_status_on_exception=False):
                yield span

    class RecordingTracerProvider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return RecordingTracer()

    def open_span_names():
        """Names of the current span and its ancestors, innermost first."""
        names, span = [], trace.get_current_span()
        while isinstance(span, RecordingSpan):
            names.append(span.name)
            span = span.parent
        return names

    return RecordingTracerProvider(), open_span_names


@pytest.mark.clause("RES-8")
def test_injected_tasks_keep_their_span(record, harness):
    reason = telemetry_support()
    if reason:
        record.not_applicable(reason)
        return
    provider, open_span_names = recording_provider()
    spans = {}  # task name -> the spans open when its effect happened

    def traced_task(name):
        # async: the task runs on the event loop, so the span context is the one FastAPI set,
        # not whatever a worker thread would inherit.
        async def task():
            spans[name] = open_span_names()
            harness.effect(name)

        return task

    def dep(tasks: BackgroundTasks):
        tasks.add_task(traced_task("dep"))

    app = FastAPI(telemetry={"tracer_provider": provider})

    @app.get("/ordinary")
    async def ordinary(tasks: BackgroundTasks):
        tasks.add_task(traced_task("injected-1"))
        tasks.add_task(traced_task("injected-2"))
        return {"ok": True}

    @app.get("/conflict")
    async def conflict(tasks: BackgroundTasks):
        tasks.add_task(traced_task("injected-1"))
        tasks.add_task(traced_task("injected-2"))
        return PlainTextResponse("x", background=BackgroundTask(traced_task("own")))

    @app.get("/conflict-dependency")
    async def conflict_dependency(_=Depends(dep)):
        return PlainTextResponse("x", background=BackgroundTask(traced_task("own")))

    cases = [("ordinary", ["injected-1", "injected-2"]),
             ("conflict", ["injected-1", "injected-2"]),
             ("conflict-dependency", ["dep"])]
    labels, evidence = {}, {}
    for case, injected in cases:
        spans.clear()
        ex = harness.request(app, path="/" + case)
        evidence[case] = {"exchange": ex, "spans_per_task": dict(spans)}
        inside = {name: BACKGROUND_TASK_SPAN in spans[name] for name in injected
                  if name in spans}
        labels[case] = span_label(inside) or "not-run"
    record.observe("cases", evidence)
    grade_cases(record, "RES-8", labels, ("not-run",), "no injected task ran")
