"""Labels for the Execution and Middleware chapters: pure functions of an observation.

spec/execution.md and spec/middleware.md name these labels under *Observed by*.  Each function
takes what the harness recorded (effect names, the ordered event log, warnings, a described
exception) and returns a label; none of them judges.  Python 3.8 compatible.
"""
from collections import Counter

from oracle import first_index, is_final_body


def sequence_label(effects, names):
    """EXEC-2: did tasks ``names`` (effects ``start-N`` / ``end-N``) run one at a time, in order?

    ``sequential``: start1 end1 start2 end2 ...; ``overlapping``: a task started while another
    was still running; ``reordered``: one at a time but not in the order added; ``incomplete``:
    a start or an end is missing or repeated.
    """
    wanted = set()
    for name in names:
        wanted.update(("start-" + name, "end-" + name))
    seen = [e for e in effects if e in wanted]
    running = set()
    for event in seen:
        kind, _, name = event.partition("-")
        if kind == "start":
            if running:
                return "overlapping"
            running.add(name)
        else:
            running.discard(name)
    counts = Counter(seen)
    if any(counts[w] != 1 for w in wanted):
        return "incomplete"
    starts = [e.partition("-")[2] for e in seen if e.startswith("start-")]
    return "sequential" if starts == list(names) else "reordered"


def never_awaited(warnings):
    """The ``coroutine ... was never awaited`` RuntimeWarnings among ``warnings``."""
    return [
        w for w in warnings
        if w["category"] == "RuntimeWarning" and "was never awaited" in w["message"]
    ]


def callable_label(ran, is_async, on_loop_thread, unstarted, warnings):
    """EXEC-3, one kind of callable.

    ``completed``: it ran (an async one on the event loop's thread); ``wrong-thread``: an async
    callable ran outside that thread; ``not-awaited``: it did not run, and a coroutine of it was
    left unstarted (``unstarted`` > 0) or reported never awaited; ``not-run``: it did not run
    and nothing shows why.
    """
    if ran:
        return "wrong-thread" if is_async and not on_loop_thread else "completed"
    return "not-awaited" if unstarted or never_awaited(warnings) else "not-run"


def propagation_label(seen, exc_type, marker):
    """EXEC-4 / MW-3: did the task's exception leave the application?

    ``seen`` is :func:`webapp.describe_exception` of what left the app, or None.  The task's
    exception is recognised by type and message, inside an exception group too.
    ``propagated``: it left the app; ``swallowed``: nothing left the app; ``replaced``:
    another exception left the app instead.
    """
    if seen is None:
        return "swallowed"
    for leaf in seen["leaves"]:
        if leaf["type"] == exc_type and marker in leaf["message"]:
            return "propagated"
    return "replaced"


def starts_after_final_body(events):
    """EXEC-5: ``http.response.start`` messages the app sent after its first final body.

    Sends the harness dropped or refused (the client was gone) count too: the app sent them.
    """
    body = first_index(events, is_final_body)
    if body is None:
        return []
    return [
        e for e in events
        if e["seq"] > body
        and e["kind"] in ("send", "send-dropped", "send-failed")
        and e.get("message") == "http.response.start"
    ]


def completion_label(events, start, end, cancelled):
    """MW-2: did the task whose effects are ``start`` / ``end`` / ``cancelled`` finish?

    ``completed``: it ended; ``cancelled``: it saw CancelledError while the application was
    still running; ``outlived-app``: it was still running when the application call returned
    (the harness cancels what is left when it closes the request's loop; a real server may
    let such an orphan run on, or not); ``unfinished``: it started and neither ended nor was
    cancelled; ``not-started``.
    """
    effects = [e["name"] for e in events if e["kind"] == "effect"]
    if end in effects:
        return "completed"
    if cancelled in effects:
        returned = first_index(events, lambda e: e["kind"] == "app-returned")
        at = first_index(events, lambda e: e["kind"] == "effect" and e["name"] == cancelled)
        return "outlived-app" if returned is not None and at > returned else "cancelled"
    return "unfinished" if start in effects else "not-started"


def ran_label(effects, name, missing="skipped"):
    """MW-7 to MW-9: ``ran``, or ``missing`` (``skipped``; MW-4 says ``ignored``)."""
    return "ran" if name in effects else missing
