"""The oracle, proven on synthetic apps: each behaviour gets its own label and no other.

The apps speak raw ASGI and do exactly one thing each (drop, warn, merge, run a task twice...),
so a label that is wrong here is wrong everywhere.
"""

import re
import warnings

import pytest
from harness import Harness
from oracle import (
    conflict_label,
    message_of,
    qualifying_signals,
    runs_label,
    tasks_after_body_label,
)

from bgmatrix import vocabulary

INJECTED, OWN = ["injected-1", "injected-2"], ["own"]

#: behaviour -> (warning to emit or None, task names to run, in order)
BEHAVIOURS = {
    "drop": (None, OWN),
    "warn": ("Background tasks were dropped", OWN),
    "merge": (None, INJECTED + OWN),
    "merge-reordered": (None, OWN + INJECTED),
    "warn+merge": ("background tasks merged", INJECTED + OWN),
    "duplicate": (None, INJECTED + INJECTED[:1] + OWN),
    "replace": (None, INJECTED),
    "lost-all": (None, []),
    "partial": (None, INJECTED[:1] + OWN),
}


def synthetic_app(h, warning, effects, tasks_first=False):
    async def app(scope, receive, send):
        await receive()
        if tasks_first:
            for name in effects:
                h.effect(name)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})
        if warning:
            warnings.warn(warning, UserWarning)
        if not tasks_first:
            for name in effects:
                h.effect(name)

    return app


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_each_behaviour_gets_its_own_label(behaviour):
    h = Harness()
    warning, effects = BEHAVIOURS[behaviour]
    ex = h.request(synthetic_app(h, warning, effects))
    assert conflict_label(ex.effects, INJECTED, OWN, ex.warnings) == behaviour


#: What spec/attachment.md (ATTACH-3) and spec/resolution.md#profiles say of each behaviour,
#: written out here rather than read from the vocabulary, so a changed passing set or profile
#: fails this test on its own.
SPEC_SAYS = {
    "drop": ("deviates", "drop"),
    "warn": ("conforms", "warn"),
    "merge": ("conforms", "merge"),
    "merge-reordered": ("conforms", "merge"),
    "warn+merge": ("conforms", "merge"),
    "duplicate": ("deviates", "duplicate"),
    "replace": ("deviates", "replace"),
    "lost-all": ("deviates", "lost-all"),
    "partial": ("deviates", "partial"),
}


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_each_conflict_label_grades_and_profiles_as_the_spec_says(behaviour):
    h = Harness()
    warning, effects = BEHAVIOURS[behaviour]
    label = conflict_label(*_seen(h, warning, effects))
    verdict, expected = vocabulary.grade("ATTACH-3", label)
    assert (verdict, vocabulary.profile_of([label])) == SPEC_SAYS[behaviour]
    assert expected == vocabulary.EXPECTATIONS["ATTACH-3"].text  # one call, one set


def _seen(h, warning, effects):
    ex = h.request(synthetic_app(h, warning, effects))
    return ex.effects, INJECTED, OWN, ex.warnings


@pytest.mark.parametrize(
    "category, message, qualifies",
    [
        (UserWarning, "Background tasks dropped", True),
        (type("DroppedTasks", (UserWarning,), {}), "background task lost", True),
        (RuntimeWarning, "background task lost", False),  # not a UserWarning
        (DeprecationWarning, "BackgroundTasks is deprecated", False),
        (UserWarning, "httpx is deprecated", False),
    ],
)
def test_only_qualifying_signals_count(category, message, qualifies):
    h = Harness()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        warnings.warn(message, category)
        h.effect("own")

    ex = h.request(app)
    assert bool(qualifying_signals(ex.warnings)) is qualifies
    assert conflict_label(ex.effects, [], ["own"], ex.warnings).startswith("warn") is qualifies


def test_runs_label_vocabulary():
    assert runs_label(["a", "b"], ["a", "b"]) == "ran"
    assert runs_label(["b", "a"], ["a", "b"]) == "reordered"
    assert runs_label(["a", "a", "b"], ["a", "b"]) == "duplicate"
    assert runs_label(["a"], ["a", "b"]) == "partial"
    assert runs_label([], ["a", "b"]) == "none-ran"
    warned = [{"category": "UserWarning", "message": "background tasks"}]
    assert runs_label(["a"], ["a"], [dict(warned[0], user_warning=True)]) == "false-warning"
    assert runs_label(["a"], ["a"], [dict(warned[0], user_warning=False)]) == "ran"


@pytest.mark.parametrize("tasks_first, label", [(False, "after-body"), (True, "before-body")])
def test_task_order_against_the_final_body(tasks_first, label):
    h = Harness()
    ex = h.request(synthetic_app(h, None, ["t"], tasks_first=tasks_first))
    assert tasks_after_body_label(ex.events) == label


def test_asgi2_apps_are_driven_too():
    h = Harness()

    class Asgi2App:
        def __call__(self, scope):
            async def instance(receive, send):
                await send({"type": "http.response.start", "status": 201, "headers": []})
                await send({"type": "http.response.body", "body": b"two", "more_body": False})
                h.effect("task")

            return instance

    ex = h.request(Asgi2App())
    assert (ex.status, ex.body, ex.effects) == (201, b"two", ["task"])


def test_disconnect_after_first_body_with_spec_2_4_makes_send_raise():
    h = Harness()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"1", "more_body": True})
        await send({"type": "http.response.body", "body": b"2", "more_body": False})

    ex = h.request(app, disconnect="after-first-body", spec_version="2.4")
    assert ex.app_exception["type"] == "OSError"
    ex = h.request(app, disconnect="after-first-body", spec_version="2.3")
    assert ex.app_exception is None and ex.dropped_sends == 1


def test_a_hanging_app_becomes_a_timeout_not_a_stuck_run():
    import asyncio

    from harness import ScenarioTimeout

    h = Harness(timeout=0.2)

    async def app(scope, receive, send):
        await asyncio.Event().wait()

    with pytest.raises(ScenarioTimeout):
        h.request(app)
    assert h.exchanges[0].events[-1]["kind"] == "timeout"


def test_runs_label_leaves_unordered_tasks_unordered():
    assert runs_label(["b", "a"], ["a", "b"]) == "reordered"
    assert runs_label(["b", "a"], ["a", "b"], ordered=False) == "ran"
    assert runs_label(["a", "a"], ["a", "b"], ordered=False) == "duplicate"


def test_messages_in_evidence_carry_no_memory_address():
    class Opaque:
        pass

    exc = ValueError(f"bad {Opaque()!r} and {Opaque()!r}")
    message = message_of(exc)
    assert "0x…" in message and not re.search(r"0x[0-9a-f]", message)
    assert message_of(ValueError("at 0x10 bytes")) == "at 0x10 bytes"  # not a repr
