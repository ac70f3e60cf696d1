"""Labels for the Lifecycle, Isolation and Resolution clauses: pure functions of an observation.

spec/lifecycle.md, spec/isolation.md and spec/resolution.md name these labels under *Observed
by*.  Each function takes plain data (effect names, the ordered event log, warning dicts,
snapshots of attribute values) and returns a label; none of them judges, and none touches an
app or the harness.  Python 3.8 compatible.
"""
from collections import Counter

from oracle import first_index, is_final_body, qualifying_signals


def _effect_named(name):
    return lambda event: event["kind"] == "effect" and event["name"] == name


def _is_response_start(event):
    return event["kind"] == "send" and event.get("message") == "http.response.start"


def teardown_position(events, teardown, task_start):
    """Where the effect ``teardown`` lies in the event log, as evidence for LIFE-1 to LIFE-4.

    ``before-response``: before ``http.response.start``; ``before-body-end``: after it but
    before the final body message; ``before-tasks``: after the body, before the effect
    ``task_start``; ``after-tasks-started``: after that effect; ``after-body``: after the body
    when no task started; ``never``: no teardown effect at all.
    """
    down = first_index(events, _effect_named(teardown))
    if down is None:
        return "never"
    start = first_index(events, _is_response_start)
    if start is None or down < start:
        return "before-response"
    body = first_index(events, is_final_body)
    if body is None or down < body:
        return "before-body-end"
    task = first_index(events, _effect_named(task_start))
    if task is None:
        return "after-body"
    return "before-tasks" if down < task else "after-tasks-started"


def resource_label(flags):
    """LIFE-1: ``flags`` is the resource's ``open`` flag as the task saw it, at start and end.

    ``open-during-tasks``: open both times; ``closed-before-tasks``: already closed when the
    task started; ``closed-during-tasks``: open at the start, closed by the end (a teardown
    that overlapped the task); ``task-not-run``: the task recorded nothing.
    """
    if not flags:
        return "task-not-run"
    if not flags[0]:
        return "closed-before-tasks"
    return "open-during-tasks" if all(flags) else "closed-during-tasks"


def teardown_task_label(effects, name, app_exception):
    """LIFE-2: the task added during teardown ran, an error reached the server, or neither."""
    if name in effects:
        return "ran"
    return "rejected" if app_exception else "ignored"


def teardown_exception_label(status, expected_status, app_exception):
    """LIFE-3: the HTTPException raised in teardown was sent as the response (its status),
    reached the server, or vanished."""
    if status == expected_status:
        return "became-response"
    return "propagated" if app_exception else "swallowed"


def function_scope_label(position):
    """LIFE-4, from :func:`teardown_position`: ``before-response`` when the teardown came
    before ``http.response.start``; ``before-tasks-only`` when it came after the response began
    but before the first task; ``after-tasks`` otherwise (a task had started, or the teardown
    came after the response with no task, or never ran)."""
    if position == "before-response":
        return position
    if position in ("before-body-end", "before-tasks"):
        return "before-tasks-only"
    return "after-tasks"


def reuse_label(effects, current, earlier, own, warnings):
    """ISO-1, one request: ``current`` is this request's marker task, ``earlier`` the markers
    of previous requests, ``own`` the names of the shared Response's own background.

    ``carried``: a previous marker ran; ``duplicate``: one of this request's tasks ran more
    than once; ``lost``: one of them did not run and no qualifying warning was emitted
    (``warned`` when one was); ``isolated``: exactly this request's tasks, once each.
    """
    counts = Counter(effects)
    if any(counts[name] for name in earlier):
        return "carried"
    expected = [current] + list(own)
    if any(counts[name] > 1 for name in expected):
        return "duplicate"
    if any(not counts[name] for name in expected):
        return "warned" if qualifying_signals(warnings) else "lost"
    return "isolated"


def collection_label(before, after):
    """ISO-2: a user's task list before and after a request, compared by element identity.

    ``unchanged``: the same tasks; ``grown``: more tasks than before; ``changed``: as many or
    fewer, but not the same ones.
    """
    if len(before) == len(after) and all(a is b for a, b in zip(before, after)):
        return "unchanged"
    return "grown" if len(after) > len(before) else "changed"


def combine(labels):
    """One label when every part agreed, else each part's label, numbered from 1."""
    if len(set(labels)) == 1:
        return labels[0]
    return " ".join("%d:%s" % (i + 1, label) for i, label in enumerate(labels))


def changed_attributes(before, after):
    """ISO-3: the keys whose value changed between two snapshots.

    Snapshot values are compared by identity; a list value (a task list) is compared by
    length and element identity, so an in-place ``append`` shows even though the list object
    is the same.  A key present in only one snapshot counts as changed.
    """
    changed = []
    for key in sorted(set(before) | set(after)):
        if key not in before or key not in after:
            changed.append(key)
            continue
        old, new = before[key], after[key]
        if isinstance(old, list) and isinstance(new, list):
            same = len(old) == len(new) and all(a is b for a, b in zip(old, new))
        else:
            same = old is new
        if not same:
            changed.append(key)
    return changed


def false_warning_label(effects, expected, warnings):
    """RES-3, one request: ``clean`` or ``false-warning`` when every task in ``expected`` ran
    exactly once; ``not-all-once`` otherwise (a warning there may be a true one)."""
    counts = Counter(effects)
    if any(counts[name] != 1 for name in expected):
        return "not-all-once"
    return "false-warning" if qualifying_signals(warnings) else "clean"


def span_label(inside):
    """RES-8, one case: ``inside`` maps each injected task that ran to whether its effect
    happened inside a ``fastapi.background_task`` span.  ``None`` when no injected task ran."""
    if not inside:
        return None
    values = list(inside.values())
    if all(values):
        return "traced"
    return "partly-traced" if any(values) else "untraced"


def crossing_label(expected, ran):
    """ISO-6 over many concurrent requests.

    ``expected``: tag -> the request that added it; ``ran``: (tag, request whose call it ran
    in) in the order they ran.  ``crossed``: some task ran inside another request's call;
    ``duplicate``: some task ran twice; ``lost``: some task never ran; ``isolated``: none.
    """
    seen = {}
    for tag, where in ran:
        seen.setdefault(tag, []).append(where)
    if any(where != expected.get(tag) for tag, wheres in seen.items() for where in wheres):
        return "crossed"
    if any(len(wheres) > 1 for wheres in seen.values()):
        return "duplicate"
    if set(expected) - set(seen):
        return "lost"
    return "isolated"
