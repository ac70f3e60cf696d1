"""What a resolution can lose, duplicate or skip when both sets of tasks run.

spec/execution.md#EXEC-7 (a failing injected task must not skip the response's own cleanup),
spec/resolution.md#RES-9 to RES-11 (tasks added after the Response was built, in a
``scope="function"`` teardown, or by a running task) and spec/attachment.md#ATTACH-17 (a custom
response class that carries its own background).  Unpatched releases drop the injected tasks in
the conflict, so the merge clauses read ``n/a`` there: what they grade is the merge itself, and
the loss is ATTACH-3's.  Every feature is found by capability.
"""
import inspect
import os

import pytest
from kind import require_fastapi
from labels_exec import propagation_label
from oracle import conflict_label, qualifying_signals
from webapp import ExceptionProbe, file_response_missing

from bgmatrix import vocabulary

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, Depends, FastAPI  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse  # noqa: E402

MARKER = "injected task failed on purpose"
TIMEOUT = 5.0  # seconds per request: a release that hangs is recorded as a timeout


def kept_label(effects, early, late, warnings):
    """Did the tasks added late (``late``) run like those added early (``early``)?

    ``none-injected-ran``: no injected task ran at all (the conflict dropped them: not this
    clause's question); ``duplicate``: some task ran twice; ``kept``: every early and late
    task ran once; ``late-lost``: the early ones ran and a late one did not (``warn+`` when a
    qualifying signal reported it); ``partial``: anything else.
    """
    injected = list(early) + list(late)
    if not any(name in effects for name in injected):
        return "none-injected-ran"
    if any(effects.count(name) > 1 for name in injected):
        return "duplicate"
    if all(name in effects for name in injected):
        return "kept"
    if all(name in effects for name in early):
        return ("warn+" if qualifying_signals(warnings) else "") + "late-lost"
    return "partial"


def grade_kept(record, clause, labels):
    """Grade ``{case: kept_label}``; cases where no injected task ran do not apply."""
    text = " ".join("%s:%s" % item for item in labels.items())
    applies = [label for label in labels.values() if label != "none-injected-ran"]
    if not applies:
        record.not_applicable("no injected task ran in any case (%s)" % text, [clause])
        return
    record.grade(clause, text, graded=applies)


def own_task(harness, name="own"):
    return BackgroundTask(harness.sync_task(name))


# -- EXEC-7: a failing injected task and the response's own cleanup -------------------------------
@pytest.mark.clause("EXEC-7")
def test_failing_injected_task_keeps_cleanup(record, harness, tmp_path):
    """The real shape: a FileResponse of a temporary file whose own background removes it."""
    path = str(tmp_path / "report.txt")
    missing = file_response_missing(__file__)
    record.observe("response_class", "PlainTextResponse" if missing else "FileResponse")

    async def failing():
        harness.effect("injected")
        raise RuntimeError(MARKER)

    def cleanup(target):
        if os.path.exists(target):
            os.remove(target)
        harness.effect("cleanup")

    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        with open(path, "w") as fh:
            fh.write("temporary report")
        tasks.add_task(failing)
        background = BackgroundTask(cleanup, path)
        if missing:  # Starlette before 0.15 without aiofiles: the same cleanup, another body
            return PlainTextResponse("temporary report", background=background)
        return FileResponse(path, background=background)

    probe = ExceptionProbe(app)
    ex = record.observe("request", harness.request(probe, timeout=TIMEOUT))
    record.observe("left_app", probe.seen)
    record.observe("file_left_behind", os.path.exists(path))
    if "injected" not in ex.effects:
        record.not_applicable("the injected task did not run: the conflict dropped it "
                              "(ATTACH-3 grades that)")
        return
    cleaned = "cleanup" in ex.effects and not os.path.exists(path)
    label = "%s+%s" % ("cleanup-ran" if cleaned else "cleanup-skipped",
                       propagation_label(probe.seen, "RuntimeError", MARKER))
    record.grade("EXEC-7", label)


# -- RES-9: tasks added after the Response was built ----------------------------------------------
@pytest.mark.clause("RES-9")
def test_tasks_added_after_the_response_was_built(record, harness):
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("early"))
        response = PlainTextResponse("x", background=own_task(harness))
        tasks.add_task(harness.sync_task("late"))  # the Response already exists
        return response

    ex = record.observe("request", harness.request(app, timeout=TIMEOUT))
    record.observe("conflict_label", conflict_label(ex.effects, ["early", "late"], ["own"],
                                                    ex.warnings))
    grade_kept(record, "RES-9", {"conflict": kept_label(ex.effects, ["early"], ["late"],
                                                        ex.warnings)})


# -- RES-10: tasks added in a scope="function" teardown -------------------------------------------
@pytest.mark.clause("RES-10")
def test_tasks_added_in_function_scope_teardown(record, harness):
    if "scope" not in inspect.signature(fastapi.Depends).parameters:
        record.not_applicable("release has no Depends(scope=...)")
        return

    def resource(tasks: BackgroundTasks):
        yield "resource"
        tasks.add_task(harness.sync_task("teardown"))

    app = FastAPI()

    @app.get("/data")
    async def data(tasks: BackgroundTasks, _=Depends(resource, scope="function")):
        tasks.add_task(harness.sync_task("endpoint"))
        return {"ok": True}

    @app.get("/conflict")
    async def conflict(tasks: BackgroundTasks, _=Depends(resource, scope="function")):
        tasks.add_task(harness.sync_task("endpoint"))
        return PlainTextResponse("x", background=own_task(harness))

    labels, evidence = {}, {}
    for case in ("data", "conflict"):
        ex = evidence[case] = harness.request(app, path="/" + case, timeout=TIMEOUT)
        labels[case] = kept_label(ex.effects, ["endpoint"], ["teardown"], ex.warnings)
    record.observe("cases", evidence)
    grade_kept(record, "RES-10", labels)


# -- RES-11: tasks added by a running task --------------------------------------------------------
@pytest.mark.clause("RES-11")
def test_tasks_added_by_a_running_task(record, harness):
    refused = []

    def adder(tasks):
        def first():
            harness.effect("first")
            try:
                tasks.add_task(harness.sync_task("added"))
            except Exception as exc:  # refusing is not a silent loss
                refused.append("%s: %s" % (type(exc).__name__, exc))
        return first

    app = FastAPI()

    @app.get("/data")
    async def data(tasks: BackgroundTasks):
        tasks.add_task(adder(tasks))
        return {"ok": True}

    @app.get("/identity")
    async def identity(tasks: BackgroundTasks):
        tasks.add_task(adder(tasks))
        return PlainTextResponse("x", background=tasks)

    @app.get("/conflict")
    async def conflict(tasks: BackgroundTasks):
        tasks.add_task(adder(tasks))
        return PlainTextResponse("x", background=own_task(harness))

    labels, evidence = {}, {}
    for case in ("data", "identity", "conflict"):
        del refused[:]
        ex = evidence[case] = harness.request(app, path="/" + case, timeout=TIMEOUT)
        labels[case] = "refused" if refused else kept_label(ex.effects, ["first"], ["added"],
                                                            ex.warnings)
    record.observe("cases", evidence)
    grade_kept(record, "RES-11", labels)


# -- ATTACH-17: a response class whose instances carry their own background -----------------------
class CleanupJSONResponse(JSONResponse):
    """A response class that always sets its own background, as logging or cleanup classes do.

    The task it runs is set per test through ``own`` (a module-level class, like real code)."""

    own = None

    def __init__(self, *args, **kwargs):
        JSONResponse.__init__(self, *args, **kwargs)
        self.background = BackgroundTask(type(self).own)


@pytest.mark.clause("ATTACH-17")
def test_response_class_with_its_own_background(record, harness):
    CleanupJSONResponse.own = staticmethod(harness.sync_task("own"))
    cases = {}
    if "response_class" in inspect.signature(FastAPI.get).parameters:
        app = FastAPI()

        @app.get("/", response_class=CleanupJSONResponse)
        async def route(tasks: BackgroundTasks):
            tasks.add_task(harness.sync_task("injected"))
            return {"ok": True}

        cases["response_class"] = app
    if "default_response_class" in inspect.signature(FastAPI).parameters:
        app = FastAPI(default_response_class=CleanupJSONResponse)

        @app.get("/")
        async def default(tasks: BackgroundTasks):
            tasks.add_task(harness.sync_task("injected"))
            return {"ok": True}

        cases["default_response_class"] = app
    if not cases:
        record.not_applicable("release takes neither response_class= nor "
                              "default_response_class=")
        return
    labels, evidence = {}, {}
    for case, app in cases.items():
        ex = evidence[case] = harness.request(app, timeout=TIMEOUT)
        labels[case] = conflict_label(ex.effects, ["injected"], ["own"], ex.warnings)
    record.observe("cases", evidence)
    record.grade("ATTACH-17", " ".join("%s:%s" % item for item in labels.items()),
                 graded=list(labels.values()))


assert all(key in vocabulary.EXPECTATIONS for key in ("EXEC-7", "RES-9", "RES-10", "RES-11"))
