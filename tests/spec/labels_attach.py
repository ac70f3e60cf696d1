"""Labels for the collection clauses and the attach-site clauses (ATTACH-9 to ATTACH-15).

Pure functions from an observation to the words each clause's *Observed by* paragraph names
(spec/collection.md, spec/attachment.md).  They take plain data (task names, event dicts,
warning dicts), never an app or the harness, so they can be checked on synthetic input.

Python 3.8 compatible: runs inside every cell.
"""
import re
from collections import Counter

from oracle import first_index, is_final_body, qualifying_signals

# ATTACH-10 asks for "a warning" about discarded metadata; the index's qualifying warning is
# about background tasks only, so this is the nearest reading: a UserWarning naming what was
# set on the temporal response.
_METADATA_WARNING = re.compile(r"header|cookie|status|temporal|response", re.IGNORECASE)


def shared_label(objects):
    """COLLECT-1: ``shared`` when every callable got the very same object, else ``split``."""
    first = objects[0]
    return "shared" if all(obj is first for obj in objects) else "split"


def order_label(effects, added):
    """COLLECT-2: did every task in ``added`` (the add_task order) run, in that order?"""
    counts = Counter(effects)
    if any(not counts[name] for name in added):
        return "missing"
    ran = [name for name in effects if name in added]
    return "in-order" if ran == list(added) else "reordered"


def freshness_label(arrivals, module_level):
    """COLLECT-3: ``arrivals`` is one ``(object, task count on arrival)`` pair per request.

    ``reused`` when an object is the module-level collection or one seen in an earlier request
    (the objects are held alive by the caller, so identity is meaningful); otherwise
    ``pre-filled`` when one arrived holding tasks; otherwise ``fresh``.
    """
    seen = []
    for obj, _ in arrivals:
        if obj is module_level or any(obj is earlier for earlier in seen):
            return "reused"
        seen.append(obj)
    if any(count for _, count in arrivals):
        return "pre-filled"
    return "fresh"


def temporal_background_label(effects, name, warnings):
    """ATTACH-9: the temporal response's own task ``name`` ran, was warned about, or neither."""
    if name in effects:
        return "ran"
    return "warned" if qualifying_signals(warnings) else "ignored"


def metadata_warnings(warnings):
    return [w for w in warnings if w.get("user_warning") and _METADATA_WARNING.search(
        w["message"])]


def metadata_label(expected, sent, warnings):
    """ATTACH-10, one aspect: how many of ``expected`` (set on the temporal response) are in
    ``sent`` (what reached the client).  Both are lists of comparable items."""
    applied = [item for item in expected if item in sent]
    if len(applied) == len(expected):
        return "applied"
    if applied:
        return "partly-applied"
    return "warned" if metadata_warnings(warnings) else "discarded"


def stream_task_label(events, name):
    """ATTACH-11: did the task ``name`` run after the final body message of the stream?"""
    ran = first_index(events, lambda e: e["kind"] == "effect" and e["name"] == name)
    if ran is None:
        return "lost"
    body = first_index(events, is_final_body)
    if body is not None and ran > body:
        return "after-stream"
    return "during-stream"


def late_task_label(effects, name, add_error):
    """ATTACH-12: a task added while streaming ran, or add_task raised, or neither."""
    if name in effects:
        return "ran"
    return "rejected" if add_error else "ignored"


def effects_after_body(events):
    """Task names whose effect came after the final body message, in order."""
    body = first_index(events, is_final_body)
    if body is None:
        return []
    return [e["name"] for e in events if e["kind"] == "effect" and e["seq"] > body]


def runs_all_label(effects, expected):
    """ATTACH-13: ``ran`` (every expected task), ``partial`` (some) or ``lost`` (none)."""
    ran = [name for name in expected if name in effects]
    if len(ran) == len(expected):
        return "ran"
    return "partial" if ran else "lost"


def websocket_label(definition_error, connection_error, endpoint_entered, effects, name):
    """ATTACH-14: the task ran, the parameter was refused with an error, or neither.

    An error counts as a refusal when route definition failed, or when the connection failed
    before the endpoint body was entered (the framework refused to call it).
    """
    if name in effects:
        return "ran"
    if definition_error or (connection_error and not endpoint_entered):
        return "rejected"
    return "ignored"


def failed_request_label(effects, name):
    """ATTACH-15: the task queued before the endpoint raised ran or not."""
    return "ran" if name in effects else "not-run"
