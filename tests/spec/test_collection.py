"""Collection: one BackgroundTasks per request, shared by the endpoint and its dependencies.

spec/collection.md.  Each test builds a small FastAPI app whose callables keep the object they
were given and add tasks that record effects into the harness log.
"""
import pytest
from kind import require_fastapi
from labels_attach import freshness_label, order_label, shared_label

fastapi = require_fastapi()  # FastAPI-level: a Starlette-only cell skips this module
from fastapi import BackgroundTasks, Depends, FastAPI  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402

REQUESTS = 2  # identity is compared within each request; two show it is not a one-off


def combine(labels):
    """One label when every request agreed, else each request's label in order."""
    return labels[0] if len(set(labels)) == 1 else " / ".join(labels)


@pytest.mark.clause("COLLECT-1", "COLLECT-2")
def test_dependencies_share_one_collection(record, harness):
    received = {}  # callable -> the object it was given, for the current request
    added = []  # task names in the order add_task was called, for the current request

    def add(who, tasks):
        received[who] = tasks
        tasks.add_task(harness.sync_task(who))
        added.append(who)

    def sub(tasks: BackgroundTasks):
        add("sub", tasks)

    # Sub-dependencies as parameters: path-operation ``dependencies=[...]`` is newer than 0.10.
    def dep(tasks: BackgroundTasks, _=Depends(sub)):
        add("dep", tasks)

    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks, _=Depends(dep)):
        add("endpoint", tasks)
        return {"ok": True}

    shared, order, evidence = [], [], []
    for _ in range(REQUESTS):
        received.clear()
        del added[:]
        ex = harness.request(app)
        # Compared while the objects are still alive, so a reused address cannot fake identity.
        objects = [received[who] for who in ("sub", "dep", "endpoint") if who in received]
        if len(objects) != 3:
            raise AssertionError("a callable was not called: %r" % sorted(received))
        shared.append(shared_label(objects))
        order.append(order_label(ex.effects, added))
        evidence.append({
            "exchange": ex,
            # Identity as "which object, in order of first sight": a run-independent name
            # for what id() shows (the address itself differs from run to run).
            "objects": object_names(received),
            "added": list(added),
        })
    record.observe("requests", evidence)

    label = combine(shared)
    record.grade("COLLECT-1", label, graded=shared)
    label = combine(order)
    record.grade("COLLECT-2", label, graded=order)


@pytest.mark.clause("COLLECT-3")
def test_each_request_gets_a_fresh_collection(record, harness):
    # Stands for the module-level collection of ISO-2: one object that outlives every request.
    module_level = BackgroundTasks()
    module_level.add_task(harness.sync_task("module-level"))
    arrivals = []  # (object, task count on arrival); holding the objects keeps ids unique

    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks):
        arrivals.append((tasks, len(tasks.tasks)))
        tasks.add_task(harness.sync_task("request-%d" % len(arrivals)))
        return PlainTextResponse("x", background=module_level)

    exchanges = [harness.request(app) for _ in range(3)]
    if len(arrivals) != 3:
        raise AssertionError("the endpoint ran %d times for 3 requests" % len(arrivals))
    record.observe("requests", exchanges)
    record.observe("arrivals", [
        {
            "tasks_on_arrival": count,
            "is_module_level": obj is module_level,
            "same_as_request": [j for j, (other, _) in enumerate(arrivals[:i]) if other is obj],
        }
        for i, (obj, count) in enumerate(arrivals)
    ])
    label = freshness_label(arrivals, module_level)
    record.grade("COLLECT-3", label)


def object_names(received):
    """Name each distinct object ``obj-1``, ``obj-2``... in the order callables received them."""
    names = []
    out = {}
    for who in sorted(received):
        obj = received[who]
        index = next((i for i, seen in enumerate(names) if seen is obj), None)
        if index is None:
            names.append(obj)
            index = len(names) - 1
        out[who] = "obj-%d" % (index + 1)
    return out
