"""The spec's vocabulary, once: verdicts, label sets, profiles and what each clause expects.

The in-cell suite (tests/spec, which puts the repository root on ``sys.path``), wire mode
(bgmatrix/run/wire.py) and the site (bgmatrix/site) all import this module, so a passing set,
its expectation text and a profile mean the same thing wherever they are used.  A test grades
a clause with one call, :func:`grade`, which returns the verdict and the expectation text from
the same :class:`Expectation`.  The disagreement comparison between raw-ASGI and wire results
lives here too, because both wire mode and the site need it.

Standard library only, Python 3.8 compatible: it runs inside every cell.
"""

import re
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

#: The verdicts a test can give; ``n/a`` when the release lacks what the clause is about.
VERDICTS = ("conforms", "deviates", "n/a")
#: Verdicts that compare an observation with the clause.
GRADED = ("conforms", "deviates")

# -- label sets (spec/resolution.md#labels) ----------------------------------------------------

#: Conflict labels in which both the injected tasks and the response's own background ran.
MERGE_LABELS = ("merge", "merge-reordered", "warn+merge", "warn+merge-reordered")
#: Merges in the order RES-6 asks for: injected tasks first.
MERGED = ("merge", "warn+merge")
#: Conflict labels in which no task was lost without a qualifying signal.
NOT_SILENT = MERGE_LABELS + ("warn", "warn+replace", "warn+partial", "warn+lost-all")
#: Each task ran exactly once, in order; a needless warning is RES-3's concern, not these.
RAN_ONCE = ("ran", "false-warning")
#: What ISO-1 forbids on any request.
CARRYING = ("carried", "grown", "duplicate")
#: ``runs_label`` labels other than ``duplicate``, prefixed ``warned+`` when a qualifying
#: warning was emitted: RES-2 forgives a task that did not run only when a warning reported it.
WARNED_NOT_DUPLICATE = ("warned+none-ran", "warned+partial", "warned+reordered",
                        "warned+false-warning", "warned+ran")

# -- schedules (spec/index.md#schedules) -------------------------------------------------------

#: How many times the harness's ``send`` hands the event loop back before returning: a write
#: that completes at once, the harness default, a slow socket.  Versioned with the spec.
SEND_YIELDS = (0, 1, 3)
#: The label of a clause whose outcome differs between schedules.
SCHEDULE_DEPENDENT = "schedule-dependent"

# -- profiles (spec/resolution.md#profiles) ----------------------------------------------------

#: The clause whose label is "the conflict behaviour" of a cell (FastAPI #11215 as reported).
CONFLICT_CLAUSE = "ATTACH-3"
#: The conflict cases a profile is read from.
CONFLICT_CLAUSES = ("ATTACH-3", "ATTACH-4", "ATTACH-16", "ATTACH-17")
#: Conflict label -> profile; other labels belong to none.
PROFILE_OF_LABEL = {
    "drop": "drop",
    "warn": "warn",
    "merge": "merge",
    "merge-reordered": "merge",
    "warn+merge": "merge",
    "warn+merge-reordered": "merge",
}


# -- expectations ------------------------------------------------------------------------------


class Expectation(NamedTuple):
    """What a clause asks of one test's labels: ``passing`` labels conform (or, when
    ``failing`` is given instead, every label outside it does); ``text`` says it in words."""

    text: str
    passing: FrozenSet[str] = frozenset()
    failing: Optional[FrozenSet[str]] = None

    def accepts(self, label: str) -> bool:
        if self.failing is not None:
            return label not in self.failing
        return label in self.passing


def _expect(text: str, *passing: str, failing: Iterable[str] = ()) -> Expectation:
    return Expectation(text, frozenset(passing), frozenset(failing) if failing else None)


def _cases(prefix: str, labels: Iterable[str]) -> Tuple[str, ...]:
    return tuple(prefix + label for label in labels)


_CONFLICT_TEXT = "injected tasks run, or a qualifying signal reports their loss"

#: Expectation key -> what it asks.  A key is a clause ID, or ``<clause>/<case>`` when one
#: clause is graded by tests that expect different things of it (RES-3 in the ordinary and the
#: conflict cases, for example).
EXPECTATIONS: Dict[str, Expectation] = {
    # attachment (spec/attachment.md)
    "ATTACH-1": _expect("ran", *RAN_ONCE),
    "ATTACH-2": _expect("ran", *RAN_ONCE),
    "ATTACH-3": _expect(_CONFLICT_TEXT, *NOT_SILENT),
    "ATTACH-4": _expect(_CONFLICT_TEXT, *NOT_SILENT),
    "ATTACH-5": _expect("ran", *RAN_ONCE),
    "ATTACH-6": _expect("ran: each task exactly once", *RAN_ONCE),
    "ATTACH-7": _expect("ran: the response's task once, no warning", "ran"),
    "ATTACH-8": _expect("ran", *RAN_ONCE),
    "ATTACH-9": _expect("ran or warned, in both cases", "ran", "warned"),
    "ATTACH-10": _expect("headers, cookies and status each applied or warned",
                         "applied", "warned"),
    "ATTACH-11": _expect("after-stream: the task runs after the final body message",
                         "after-stream"),
    "ATTACH-12": _expect("ran or rejected", "ran", "rejected"),
    "ATTACH-13": _expect("ran: every dependency's task after the file is served", "ran"),
    "ATTACH-14": _expect("ran or rejected", "ran", "rejected"),
    "ATTACH-15": _expect("not-run: the failed request's task does not run", "not-run"),
    "ATTACH-16": _expect(_CONFLICT_TEXT, *NOT_SILENT),
    "ATTACH-17": _expect(_CONFLICT_TEXT, *NOT_SILENT),
    # collection (spec/collection.md)
    "COLLECT-1": _expect("shared", "shared"),
    "COLLECT-2": _expect("in-order: sub, dep, endpoint", "in-order"),
    "COLLECT-3": _expect("fresh: three distinct, empty objects, none the module-level one",
                         "fresh"),
    # execution (spec/execution.md)
    "EXEC-1": _expect("after-body", "after-body"),
    "EXEC-2": _expect("sequential", "sequential"),
    "EXEC-3": _expect("completed", "completed"),
    "EXEC-4": _expect("propagated", "propagated"),
    "EXEC-5": _expect("no-second-start", "no-second-start"),
    "EXEC-6": _expect("ran or rejected", "ran", "rejected"),
    "EXEC-7": _expect("cleanup-ran+propagated: the response's own background ran and the "
                      "injected task's exception reached the server", "cleanup-ran+propagated"),
    # middleware (spec/middleware.md)
    "MW-1": _expect("after-body", "after-body"),
    "MW-2": _expect("completed", "completed"),
    "MW-3": _expect("propagated", "propagated"),
    "MW-4": _expect("ran", "ran"),
    "MW-5": _expect("after-body", "after-body"),
    "MW-6": _expect("after-body", "after-body"),
    "MW-7": _expect("ran", "ran"),
    "MW-8": _expect("ran", "ran"),
    "MW-9": _expect("ran", "ran"),
    # lifecycle (spec/lifecycle.md)
    "LIFE-1": _expect("open-during-tasks: the resource is open when the task starts and ends",
                      "open-during-tasks"),
    "LIFE-2": _expect("ran or rejected", "ran", "rejected"),
    "LIFE-3": _expect("became-response: nothing was sent yet, so the exception is the "
                      "response", "became-response"),
    "LIFE-5": _expect("propagated: the response had started, so the exception reaches the "
                      "server", "propagated"),
    "LIFE-4": _expect("before-response: teardown before http.response.start and any task",
                      "before-response"),
    # isolation (spec/isolation.md)
    "ISO-1": _expect("no request runs an earlier request's task or a task twice",
                     failing=CARRYING),
    "ISO-2": _expect("unchanged after every request: the same single task", "unchanged"),
    "ISO-3": _expect("untouched: the returned Response still has the background the app gave "
                     "it", "untouched"),
    "ISO-6": _expect("isolated: every task ran once, inside the call of the request that "
                     "added it", "isolated"),
    "ISO-5": _expect("untouched: the app's BackgroundTask(s) keep their tasks, functions and "
                     "arguments", "untouched"),
    # resolution (spec/resolution.md)
    "RES-2": _expect("each task exactly once, unless a warning reports it did not run",
                     *(RAN_ONCE + WARNED_NOT_DUPLICATE)),
    "RES-3": _expect("clean: no qualifying signal where every task ran once", "clean"),
    "RES-3/declared-but-unused": _expect("clean", "clean"),
    "RES-3/conflict": _expect("no qualifying signal when every task ran",
                              "merge", "merge-reordered"),
    "RES-6": _expect(
        "merge: injected tasks in the order added, then the response's own background",
        *MERGED),
    "RES-9": _expect("kept: tasks added after the Response was built run too", "kept"),
    "RES-10": _expect("kept: tasks added in a function-scoped teardown run too", "kept"),
    "RES-11": _expect("kept or refused: a task added by a running task runs, or add_task "
                      "raises", "kept", "refused"),
    "RES-7": _expect("every site's label equals the request handler's for the same case",
                     "same"),
    "RES-8": _expect("traced: every injected task that ran did so inside "
                     "fastapi.background_task", "traced"),
}


def clause_of(key: str) -> str:
    """The clause an expectation key grades: ``RES-3/conflict`` -> ``RES-3``."""
    return key.split("/", 1)[0]


def grade(key: str, labels: Union[str, Iterable[str]]) -> Tuple[str, str]:
    """``(verdict, expected)`` for one test's observation of a clause.

    ``labels`` is the label the test saw, or one label per case it observed; the clause
    conforms when the expectation accepts every one of them.  The verdict and the text come
    from the same :class:`Expectation`, so they cannot disagree.  An unknown key is a bug in
    the suite and raises ``KeyError``.
    """
    expectation = EXPECTATIONS[key]
    parts = [labels] if isinstance(labels, str) else list(labels)
    if not parts:
        raise ValueError(f"{key}: nothing to grade")
    conforms = all(expectation.accepts(label) for label in parts)
    return ("conforms" if conforms else "deviates"), expectation.text


def profile_of(labels: Iterable[str]) -> str:
    """The conformance profile of a set of conflict labels (spec/resolution.md#profiles).

    ``drop``, ``warn`` or ``merge``; ``mixed`` when the labels span profiles; the labels
    themselves when one is outside every profile; ``unmeasured`` when there are none.
    """
    found = set(labels)
    if not found:
        return "unmeasured"
    outside = sorted(label for label in found if label not in PROFILE_OF_LABEL)
    if outside:
        return " / ".join(outside)
    profiles = {PROFILE_OF_LABEL[label] for label in found}
    return profiles.pop() if len(profiles) == 1 else "mixed"


# -- comparing raw-ASGI and wire results -------------------------------------------------------

_CASE = re.compile(r"^([a-z][a-z-]*):(.+)$")

#: Wire cases that observe the same situation as a differently named raw case ("" is the raw
#: label when the raw test has one case and names none).  MW-1's raw test is the plain
#: response.  MW-2: uvicorn answers ``receive`` with ``http.disconnect`` as soon as the
#: response is complete while the client stays, which is the raw "after-response"; a client
#: that closes once it holds every byte (by Content-Length) is the raw "after-all-bytes".
CASE_PAIRS = {
    "MW-1": {"response": ""},
    "MW-2": {"keep-open": "after-response", "close-after-read": "after-all-bytes"},
}


def label_parts(label: str) -> Tuple[Dict[str, str], Set[str]]:
    """``case:outcome`` parts by case, and the parts that name no case (``n/a`` left out)."""
    cases: Dict[str, str] = {}
    bare: Set[str] = set()
    for part in label.split("; "):
        match = _CASE.match(part)
        if match:
            cases[match.group(1)] = match.group(2)
        elif part and part not in ("n/a", "-"):
            bare.add(part)
    return cases, bare


def disagreements(raw_clauses: dict, wire_clauses: dict) -> List[dict]:
    """Where the raw-ASGI result and the wire result of one cell tell different stories.

    Pure: takes a result's ``clauses`` and a wire result's ``clauses``.  Only clauses graded
    (``conforms`` or ``deviates``) on both sides are compared.  A ``verdict`` disagreement is
    a different verdict; a ``label`` one is the same verdict with a different outcome for a
    case both sides observed (after :data:`CASE_PAIRS`), or different case-free labels.
    """
    found = []
    for clause in sorted(wire_clauses):
        wire, raw = wire_clauses[clause], raw_clauses.get(clause)
        if raw is None or raw.get("verdict") not in GRADED or wire.get("verdict") not in GRADED:
            continue
        entry = {"clause": clause,
                 "raw": {"verdict": raw["verdict"], "label": raw["label"]},
                 "wire": {"verdict": wire["verdict"], "label": wire["label"]}}
        raw_cases, raw_bare = label_parts(raw["label"])
        wire_cases, wire_bare = label_parts(wire["label"])
        if len(raw_bare) == 1 and not raw_cases:
            raw_cases[""] = next(iter(raw_bare))  # a single unnamed case, for CASE_PAIRS
        pairs = CASE_PAIRS.get(clause, {})
        differing = sorted(
            case for case, outcome in wire_cases.items()
            if pairs.get(case, case) in raw_cases and raw_cases[pairs.get(case, case)] != outcome
        )
        bare_differs = bool(raw_bare and wire_bare and raw_bare != wire_bare)
        if raw["verdict"] != wire["verdict"]:
            found.append(dict(entry, kind="verdict", cases=differing))
        elif differing or bare_differs:
            found.append(dict(entry, kind="label", cases=differing))
    return found


# -- shapes: dependency sites, exception handlers, sync endpoints (SHAPE-10 to SHAPE-16) ---------
EXPECTATIONS.update({
    "SHAPE-10": _expect("ran: at every site, with a data and a Response return", *RAN_ONCE),
    "SHAPE-11": _expect(_CONFLICT_TEXT + ", at every site", *NOT_SILENT),
    "SHAPE-12": _expect("called: the dependency declared at each site runs once per request",
                        "called"),
    "SHAPE-13": _expect("not-run: a handled failure's injected task does not run", "not-run"),
    "SHAPE-14": _expect("ran: the background of the handler's response runs", *RAN_ONCE),
    "SHAPE-15": _expect("not-run: a task a dependency added before validation failed does "
                        "not run", "not-run"),
    "SHAPE-16": _expect("same: a def endpoint's label equals the async def one's in every case",
                        "same"),
})


# -- shapes: response classes, HEAD, replacing middleware, mounts, declarations (SHAPE-1 to 9) ---
EXPECTATIONS.update({
    "SHAPE-1": _expect("ran: every response class, constructed without background", *RAN_ONCE),
    "SHAPE-2": _expect(_CONFLICT_TEXT + ", with every response class", *NOT_SILENT),
    "SHAPE-3": _expect("ran: on HEAD routes and with 204/304 responses", *RAN_ONCE),
    "SHAPE-4": _expect("refused+no-task: a refused method runs no task (or the route serves "
                       "it and the task runs once)",
                       "refused+no-task", "served+ran", "served+false-warning"),
    "SHAPE-5": _expect("ran: the endpoint's tasks and the replacement's own, each once "
                       "(not ordered against each other), or a qualifying signal reports the "
                       "loss", *(RAN_ONCE + ("warned+none-ran", "warned+partial"))),
    "SHAPE-6": _expect("ran: in mounted apps and nested routers", *RAN_ONCE),
    "SHAPE-7": _expect(_CONFLICT_TEXT + ", in mounted apps and nested routers", *NOT_SILENT),
    "SHAPE-8": _expect("ran once, or the declaration is refused loudly (rejected, "
                       "not-injected)", *(RAN_ONCE + ("rejected", "not-injected"))),
    "SHAPE-9": _expect(_CONFLICT_TEXT + ", when the response's own background is empty",
                       *NOT_SILENT),
})
