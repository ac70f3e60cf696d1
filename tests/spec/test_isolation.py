"""Isolation: no state across requests, no mutation of user-supplied objects (ISO-1 to ISO-5).

spec/isolation.md.  ISO-1
returns one Response object, created once outside the endpoint, over three requests, each
adding a task named after its request number, so that a task of request *n* seen during request
*n + 1* is identified by name.  ISO-2 does the same with a module-level BackgroundTasks as the
Response's background.  ISO-3 (the Response) and ISO-5 (the BackgroundTask(s) the app made)
snapshot the user's objects just before the endpoint returns them and compare them after the
request.
"""
import pytest
from kind import require_fastapi
from labels_life import (
    changed_attributes,
    collection_label,
    combine,
    crossing_label,
    reuse_label,
)

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, FastAPI  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.background import BackgroundTasks as StarletteTasks  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402

REQUESTS = 3


@pytest.mark.parametrize("own_background", [False, True], ids=["no-background", "own-task"])
@pytest.mark.clause("ISO-1")
def test_reused_response_runs_only_current_tasks(record, harness, own_background):
    # Created once, like a module-level object: it outlives every request below.
    own = ["own"] if own_background else []
    background = BackgroundTask(harness.sync_task("own")) if own_background else None
    shared = PlainTextResponse("shared", background=background)
    served = []  # the request numbers the endpoint saw

    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        served.append(len(served) + 1)
        tasks.add_task(harness.sync_task("request-%d" % served[-1]))
        return shared

    exchanges = [harness.request(app) for _ in range(REQUESTS)]
    if served != list(range(1, REQUESTS + 1)):
        raise AssertionError("the endpoint saw requests %r" % served)
    record.observe("requests", exchanges)
    labels = [
        reuse_label(
            ex.effects,
            "request-%d" % n,
            ["request-%d" % earlier for earlier in range(1, n)],
            own,
            ex.warnings,
        )
        for n, ex in enumerate(exchanges, 1)
    ]
    record.observe("labels_per_request", labels)
    label = combine(labels)
    record.grade("ISO-1", label, graded=labels)


@pytest.mark.clause("ISO-2")
def test_reused_background_tasks_is_not_extended(record, harness):
    # Created once, like a module-level object: it outlives every request below.
    module_level = StarletteTasks()
    module_level.add_task(harness.sync_task("module-level"))
    original = list(module_level.tasks)
    served = []

    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        served.append(len(served) + 1)
        tasks.add_task(harness.sync_task("request-%d" % served[-1]))
        return PlainTextResponse("x", background=module_level)

    collection, runs, evidence = [], [], []
    for n in range(1, REQUESTS + 1):
        ex = harness.request(app)
        after = list(module_level.tasks)
        collection.append(collection_label(original, after))
        runs.append(reuse_label(ex.effects, "request-%d" % n,
                                ["request-%d" % earlier for earlier in range(1, n)],
                                ["module-level"], ex.warnings))
        evidence.append({
            "exchange": ex,
            "length_after": len(after),
            "original_tasks_kept": [any(t is o for t in after) for o in original],
        })
    if served != list(range(1, REQUESTS + 1)):
        raise AssertionError("the endpoint saw requests %r" % served)
    record.observe("requests", evidence)
    record.observe("runs_per_request", runs)
    label = combine(collection)
    record.grade("ISO-2", label, graded=collection)


def snapshot(response, background, created):
    """The attributes ISO-3 compares, as values to compare by identity (lists by element).

    ``background`` is the object the endpoint gave the response and ``created`` the
    BackgroundTask objects the app made, all kept by the caller: their own state is compared
    even if the response now points elsewhere or the list was reordered.
    """
    snap = {"response.background": response.background}
    tasks = getattr(background, "tasks", None)
    if tasks is not None:  # a BackgroundTasks: the list object and its elements
        snap["background.tasks"] = [tasks]  # the list object itself, by identity
        snap["background.tasks[]"] = list(tasks)
    for i, task in enumerate(created):
        for attr in ("func", "args", "kwargs"):
            snap["task%d.%s" % (i + 1, attr)] = getattr(task, attr, None)
    return snap


def user_background(kind, harness):
    if kind == "none":
        return None
    if kind == "task":
        return BackgroundTask(harness.sync_task("own"), "arg", key="value")
    own = StarletteTasks()
    own.add_task(harness.sync_task("own-1"), "arg", key="value")
    own.add_task(harness.sync_task("own-2"))
    return own


def mutation_label(changed):
    return "mutated[%s]" % ",".join(changed) if changed else "untouched"


def split_changes(changed):
    """ISO-3 is about the Response object, ISO-5 about the background objects the app made."""
    on_response = [c for c in changed if c.startswith("response.")]
    return on_response, [c for c in changed if c not in on_response]


@pytest.mark.parametrize("kind", ["none", "task", "tasks"])
@pytest.mark.clause("ISO-3", "ISO-5")
def test_user_objects_are_not_mutated(record, harness, kind):
    """Each background kind, with injected tasks and with a declared but unused collection."""
    kept = {}  # the endpoint's response, its background and their snapshot

    def build_app(add_injected):
        app = FastAPI()

        @app.get("/")
        async def endpoint(tasks: BackgroundTasks):
            if add_injected:
                tasks.add_task(harness.sync_task("injected"))
            background = user_background(kind, harness)
            created = list(getattr(background, "tasks", [background] if background else []))
            response = PlainTextResponse("x", background=background)
            kept.update(response=response, background=background, created=created,
                        before=snapshot(response, background, created))
            return response

        return app

    per_clause = {"ISO-3": ([], []), "ISO-5": ([], [])}  # clause -> (labels, graded)
    evidence = {}
    for case, add_injected in (("with-injected", True), ("declared-unused", False)):
        kept.clear()
        ex = harness.request(build_app(add_injected))
        if "response" not in kept:
            raise AssertionError("the endpoint did not run")
        changed = changed_attributes(
            kept["before"], snapshot(kept["response"], kept["background"], kept["created"]))
        evidence[case] = {"exchange": ex, "changed": changed}
        for clause, part in zip(("ISO-3", "ISO-5"), split_changes(changed)):
            labels, graded = per_clause[clause]
            graded.append(mutation_label(part))
            labels.append("%s/%s:%s" % (kind, case, graded[-1]))
    record.observe("cases", evidence)
    record.grade("ISO-3", " ".join(per_clause["ISO-3"][0]), graded=per_clause["ISO-3"][1])
    if kind == "none":
        record.not_applicable("the app made no BackgroundTask(s) of its own in this case",
                              clauses=["ISO-5"])
    else:
        record.grade("ISO-5", " ".join(per_clause["ISO-5"][0]), graded=per_clause["ISO-5"][1])


@pytest.mark.clause("ISO-3")
def test_identity_case_leaves_response_untouched(record, harness):
    """The identity pattern: the injected object is the Response's own background."""
    kept = {}
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        tasks.add_task(harness.sync_task("injected"))
        response = PlainTextResponse("x", background=tasks)
        kept.update(response=response, before={"response.background": response.background})
        return response

    record.observe("request", harness.request(app))
    changed = changed_attributes(
        kept["before"], {"response.background": kept["response"].background})
    record.observe("changed", changed)
    record.grade("ISO-3", "identity:" + mutation_label(changed),
                 graded=mutation_label(changed))


CONCURRENT = 1000  # requests in flight at once on one app (issue: at least 1,000)


@pytest.mark.clause("ISO-6")
def test_concurrent_requests_keep_their_own_tasks(record, harness):
    ran = []

    def tagged(tag):
        async def task():  # async: it runs in the request's own context, never a thread's
            ran.append((tag, harness.current_request()))
        return task

    app = FastAPI()

    @app.get("/data")
    async def data(n: int, tasks: BackgroundTasks):
        tasks.add_task(tagged("%d-a" % n))
        tasks.add_task(tagged("%d-b" % n))
        return {"n": n}

    @app.get("/response")
    async def response(n: int, tasks: BackgroundTasks):
        tasks.add_task(tagged("%d-a" % n))
        return PlainTextResponse(str(n))

    paths, expected = [], {}
    for n in range(CONCURRENT):
        kind = "data" if n % 2 == 0 else "response"
        paths.append("/%s?n=%d" % (kind, n))
        expected["%d-a" % n] = n
        if kind == "data":
            expected["%d-b" % n] = n
    statuses = harness.concurrent(app, paths, timeout=60)
    label = crossing_label(expected, ran)
    record.observe("requests", len(paths))
    record.observe("statuses", sorted(set(str(s) for s in statuses)))
    record.observe("tasks_expected", len(expected))
    record.observe("tasks_ran", len(ran))
    record.observe("first_problems", [
        {"tag": tag, "ran_in": w, "added_in": expected.get(tag)}
        for tag, w in ran if w != expected.get(tag)][:10])
    record.grade("ISO-6", label)
