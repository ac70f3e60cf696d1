"""Labels: pure functions from an observation to the spec's observation vocabulary.

A label says what happened; a verdict (conforms / deviates / n/a) compares it with a clause.
The vocabulary and its first-match-wins order are defined in spec/resolution.md#labels; the
self-tests in tests/unit/test_oracle.py hold these functions to it with synthetic apps.

Python 3.8 compatible: runs inside every cell.
"""
import re
from collections import Counter

_QUALIFYING = re.compile(r"background ?tasks?", re.IGNORECASE)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+(?=>)")  # the tail of a default repr


def message_of(exc):
    """``str(exc)`` without the memory addresses of default reprs (``<X object at 0x7f…>``):
    they differ on every run and say nothing about the framework, and evidence must not change
    when behaviour did not."""
    return _ADDRESS.sub(" at 0x…", str(exc))


def qualifying_signals(warnings):
    """Signals that report background tasks (spec/index.md#terms): a ``UserWarning`` (or a
    subclass), or a WARNING-or-above record of the ``fastapi`` / ``starlette`` loggers, whose
    message names background tasks.

    Matched on category and message, never counted blindly: newer Starlette releases emit
    unrelated deprecation warnings during a request.
    """
    return [w for w in warnings
            if (w.get("user_warning") or w.get("log_level")) and _QUALIFYING.search(w["message"])]


def conflict_label(effects, injected, own, warnings):
    """Label one conflict request.

    ``effects``: task names in the order they ran; ``injected``: names added to the injected
    BackgroundTasks, in the order added; ``own``: names of the response's own background.
    """
    counts = Counter(effects)
    warned = bool(qualifying_signals(warnings))
    prefix = "warn+" if warned else ""
    expected = list(injected) + list(own)
    if any(n > 1 for n in counts.values()):
        return prefix + "duplicate"
    ran = [name for name in expected if counts[name] == 1]
    if not ran:
        return prefix + "lost-all"
    if len(ran) == len(expected):
        in_order = [e for e in effects if e in expected] == expected
        return prefix + ("merge" if in_order else "merge-reordered")
    ran_injected = [n for n in injected if counts[n]]
    ran_own = [n for n in own if counts[n]]
    if len(ran_own) == len(own) and not ran_injected:
        return "warn" if warned else "drop"
    if len(ran_injected) == len(injected) and not ran_own:
        return prefix + "replace"
    return prefix + "partial"


def runs_label(effects, expected, warnings=(), ordered=True):
    """Label a non-conflict request: did each expected task run exactly once, in order?

    ``ordered=False`` where nothing orders the expected tasks (they run in concurrent
    asyncio tasks), so ``reordered`` would report a race rather than the framework's choice.
    """
    counts = Counter(effects)
    if any(counts[n] > 1 for n in expected):
        return "duplicate"
    missing = [n for n in expected if not counts[n]]
    if len(missing) == len(expected) and expected:
        return "none-ran"
    if missing:
        return "partial"
    if ordered and [e for e in effects if e in expected] != list(expected):
        return "reordered"
    if qualifying_signals(warnings):
        return "false-warning"
    return "ran"


def first_index(events, predicate):
    """Sequence number of the first event matching ``predicate``, or None."""
    for event in events:
        if predicate(event):
            return event["seq"]
    return None


def is_final_body(event):
    return (
        event["kind"] == "send"
        and event.get("message") == "http.response.body"
        and not event.get("more_body")
    )


def is_effect(event):
    return event["kind"] == "effect"


def tasks_after_body_label(events):
    """Did every task effect come after the final body message?

    ``after-body``: yes; ``before-body``: a task ran before the client had the whole body;
    ``no-body``: the final body was never sent; ``no-task``: no task ran at all.
    """
    body = first_index(events, is_final_body)
    first_task = first_index(events, is_effect)
    if first_task is None:
        return "no-task"
    if body is None:
        return "no-body"
    return "after-body" if first_task > body else "before-body"


def schedule_label(outcomes):
    """One label for a clause observed under several schedules (spec/index.md#schedules).

    ``outcomes``: ``{schedule: label}`` in the order run.  When every schedule gave the same
    label, that label; otherwise ``schedule-dependent (<schedule>=<label> ...)``, so each
    schedule's outcome stays in the label and the verdict (which grades every schedule's label)
    conforms only when each schedule conforms.
    """
    distinct = set(outcomes.values())
    if len(distinct) == 1:
        return distinct.pop()
    return "schedule-dependent (%s)" % " ".join("%s=%s" % item for item in outcomes.items())

