"""Agreement between the two evidence sources: why a server's wire label differs from the
raw-ASGI label of the same cell (issue 13, item 6).

A disagreement (:func:`bgmatrix.vocabulary.disagreements`) is *explained* when a measurement
says why the server's run came out differently, never by a reading of changelogs:

- **a schedule**: the raw label is ``schedule-dependent`` and one of its schedules gives the
  server's outcome (spec/index.md#schedules); the server runs the framework on that schedule;
- **a server fact**: the server, probed with no framework at all (``bgmatrix probe``,
  matrix/server-probes.json), delivers the protocol in a way the raw harness does not, and that
  way accounts for the wire outcome.  Each rule below names the probe it rests on and checks
  the facts of *this* server release; a release that was not probed is explained by nothing.

Explanations are plain sentences (no markup: a page escapes them whole, since a probe fact is
whatever the server did).  Pure functions of a result, its wire run and the probe record: the
site shows the explanation beside each disagreement, and a unit test holds the committed
results to "no disagreement without an explanation".  Shared by both layers: ``bgmatrix
probe`` writes the record this module reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bgmatrix import results, vocabulary
from bgmatrix.errors import ProbeError
from bgmatrix.files import read_checked
from bgmatrix.spec import ROOT

PROBES_PATH = ROOT / "matrix" / "server-probes.json"

Facts = Mapping[str, Any]


def load_probes(path: Path = PROBES_PATH) -> Optional[dict]:
    """matrix/server-probes.json checked against its schema; None when there is none; a
    corrupt or refused file is a one-line :class:`ProbeError`."""
    return read_checked(path, "server-probes", ProbeError, "server probe record")


def facts_of(probes: Optional[Mapping[str, Any]], server: str, version: Optional[str]) -> Facts:
    """The probed facts of one server release ({} when it was not probed, or not served)."""
    entry = ((probes or {}).get("releases") or {}).get(f"{server} {version}") or {}
    return entry.get("facts") or {} if entry.get("state") == "ok" else {}


@dataclass(frozen=True)
class Explanation:
    basis: str  # "schedule" or the probe fact it rests on, e.g. "held-final.length"
    text: str


@dataclass(frozen=True)
class Case:
    """One disagreement, with everything a rule may look at."""

    clause: str
    server: str
    version: str
    raw: Mapping[str, Any]  # the raw clause entry (verdict, label)
    wire: Mapping[str, Any]  # the server's clause entry (verdict, label, evidence)
    result: Mapping[str, Any]  # the whole raw result: packages, other clauses, test records
    facts: Facts

    @property
    def raw_cases(self) -> dict[str, str]:
        cases, bare = vocabulary.label_parts(str(self.raw.get("label", "")))
        if not cases and len(bare) == 1:
            cases[""] = next(iter(bare))
        return cases

    @property
    def wire_cases(self) -> dict[str, str]:
        return vocabulary.label_parts(str(self.wire.get("label", "")))[0]

    @property
    def release(self) -> str:
        return f"{self.server} {self.version}"


# -- schedules ------------------------------------------------------------------------------------

_SCHEDULED = re.compile(r"([\w./-]+)=([\w-]+)")


def matching_schedules(raw_label: str, wire_label: str) -> list[str]:
    """The schedules of a ``schedule-dependent (...)`` raw label whose outcome is the wire's
    label for every case the wire observed (spec/index.md#schedules)."""
    wire_cases, wire_bare = vocabulary.label_parts(wire_label)
    wire_outcomes = set(wire_cases.values()) | wire_bare
    per_schedule: dict[str, set[str]] = {}
    for part_ in raw_label.split("; "):
        if "schedule-dependent (" not in part_:
            continue
        for name, outcome in _SCHEDULED.findall(part_.split("(", 1)[1]):
            per_schedule.setdefault(name, set()).add(outcome)
    return sorted(name for name, outcomes in per_schedule.items()
                  if outcomes and outcomes <= wire_outcomes)


def by_schedule(case: Case) -> Optional[Explanation]:
    found = matching_schedules(str(case.raw.get("label", "")), str(case.wire.get("label", "")))
    if not found:
        return None
    return Explanation("schedule", "the server behaves like schedule " + ", ".join(found)
                       + " of the raw suite, which gives the same outcome")


# -- server facts ---------------------------------------------------------------------------------


def _raw_exceptions(result: Mapping[str, Any], clause: str) -> set[tuple[str, str]]:
    """Every ``(type, message)`` the raw records of ``clause`` saw leave the application."""
    found: set[tuple[str, str]] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if isinstance(value.get("type"), str) and isinstance(value.get("message"), str):
                found.add((value["type"], value["message"]))
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    for test in result.get("tests") or []:
        if clause in (test.get("clauses") or []):
            walk(test.get("observations"))
    return found


def no_async_library(case: Case) -> Optional[Explanation]:
    """The server runs the app where sniffio finds no event loop: anyio cannot run."""
    found = case.facts.get("scope.async_library")
    packages = (case.result.get("provenance") or {}).get("packages") or {}
    if found in (None, "asyncio", "trio", "no-sniffio") or "anyio" not in packages:
        return None
    return Explanation("scope.async_library", (
        f"{case.release} runs the app where sniffio finds no event loop (probe "
        f"scope.async_library: {found}), so anyio {packages['anyio']}, which this release "
        "runs its tasks and responses through, fails inside every request; the wire label "
        "records that failure, not the framework's behaviour"))


def scope_extensions(case: Case) -> Optional[Explanation]:
    """A release that reads ``scope["extensions"]`` unguarded meets a server that sets it."""
    if ("KeyError", "'extensions'") not in _raw_exceptions(case.result, case.clause):
        return None
    found = case.facts.get("scope.extensions", "unprobed")
    if found == "unprobed":
        return None
    if found is None:
        return Explanation("scope.extensions", (
            f"this release reads scope['extensions'] without a default; neither the raw "
            f"harness nor {case.release} sets that key (probe scope.extensions: absent), so "
            "both raise KeyError after http.response.start: the raw label names the "
            "missing task first, the wire label the missing body. Same failure"))
    return Explanation("scope.extensions", (
        f"this release reads scope['extensions'] without a default and raises KeyError "
        f"where the raw harness leaves the key out; {case.release} sets it (probe "
        f"scope.extensions: {', '.join(found) or 'an empty map'}), so the response is "
        "served and its task runs"))


def held_final_body(case: Case) -> Optional[Explanation]:
    """A task held before the final, empty message: a client with every byte sees after-body."""
    if case.facts.get("held-final.length") != "body-complete":
        return None
    raw, wire = case.raw_cases, case.wire_cases
    before = {"before-body"}
    raw_response = raw.get("response", raw.get(""))
    if raw_response not in before or wire.get("response") != "after-body":
        return None
    if any(wire.get(k) != raw.get(k, raw.get("")) for k in wire if k != "response"):
        return None
    return Explanation("held-final.length", (
        f"{case.release} delivers every byte of a Content-Length body before the final, "
        "empty body message (probe held-final.length: body-complete), so a client holds the "
        "whole response while the task is holding that message back: the raw log's "
        "before-body is after-body to the client. A chunked stream's final chunk is held "
        f"(held-final.chunked: {case.facts.get('held-final.chunked')}) and reads the same on "
        "both sources"))


def disconnect_after_final(case: Case) -> Optional[Explanation]:
    """The client's close reaches the app only after the final message (raw ``after-response``)."""
    if case.facts.get("close-before-final") != "nothing":
        return None
    wire_close = case.wire_cases.get("close-after-read")
    raw_after = case.raw_cases.get("after-response")
    if wire_close is None or wire_close != raw_after:
        return None
    if any(case.wire_cases.get(k) not in (None, raw_after) for k in case.wire_cases):
        return None
    return Explanation("close-before-final", (
        f"a client that closes once it holds a Content-Length body reaches the app on "
        f"{case.release} only after the final body message (probe close-before-final: no "
        "http.disconnect before it), which is the raw case after-response, whose outcome "
        f"in this cell is {raw_after}, as on the wire; the raw after-all-bytes case, "
        "where the disconnect comes first, is what uvicorn delivers"))


def request_after_body(case: Case) -> Optional[Explanation]:
    """The server answers ``receive()`` after the body with another ``http.request``."""
    found = {case.facts.get("disconnect.keep-open"), case.facts.get("disconnect.close")}
    if "http.request" not in found or case.clause != "MW-2":
        return None
    return Explanation("disconnect.close", (
        f"{case.release} answers receive() after the request body with another "
        "http.request, where ASGI has it wait and then send http.disconnect (probe "
        "disconnect.close: http.request); no raw schedule does that. Under "
        "BaseHTTPMiddleware the task then ends cancelled in one case or the other "
        "depending on the run: a server fault, not a fact about the framework"))


def send_raises(case: Case) -> Optional[Explanation]:
    """``send`` raises once the client has left, where ASGI 2.3 has it drop the message."""
    found = case.facts.get("send-after-close.send")
    if found in (None, "ok") or case.clause != "MW-7" or case.wire.get("label") != "skipped":
        return None
    seen = (case.wire.get("evidence") or {}).get("app_exception")
    return Explanation("send-after-close.send", (
        f"{case.release} raises {found} from send once the client has left mid-stream "
        "(probe send-after-close.send), where ASGI before 2.4 has it drop the message (and "
        "2.4 lets it raise OSError only); the exception ends the stream before its background"
        + (f" (the wire run recorded {seen} leaving the app)" if seen else "")
        + ". The raw harness drops such messages as ASGI asks, and no raw schedule raises "
        "anything but OSError (MW-9): a server fault, not a fact about the framework"))


def cancel_message_lost(case: Case) -> Optional[Explanation]:
    """A cancelled ``receive()`` raises without anyio's message: anyio lets it out."""
    if case.facts.get("cancel-receive") != "lost-message":
        return None  # measured on the newest Python that ran the release (bgmatrix probe)
    python = str((case.result.get("cell") or {}).get("python", ""))
    if tuple(int(p) for p in python.split(".") if p.isdigit()) < (3, 9):
        return None  # before 3.9 there is no cancellation message to lose
    if case.clause != "EXEC-1" or not any(
            outcome == "no-task" and case.raw_cases.get(name) != "no-task"
            for name, outcome in case.wire_cases.items()):
        return None
    return Explanation("cancel-receive", (
        f"a task cancelled while it waits in receive() on {case.release} gets a "
        "CancelledError without the cancellation's message (probe cancel-receive: "
        "lost-message); anyio's cancel scope takes it for a foreign cancellation and lets it "
        "out of the streaming response's task group, which ends the response before its "
        "background"))


#: Tried in order; the first that holds explains the disagreement.
RULES: tuple[Callable[[Case], Optional[Explanation]], ...] = (
    by_schedule, no_async_library, scope_extensions, held_final_body, disconnect_after_final,
    request_after_body, send_raises, cancel_message_lost,
)


def explain(case: Case) -> Optional[Explanation]:
    for rule in RULES:
        found = rule(case)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class Disagreement:
    cell: str
    clause: str
    server: str
    version: str
    kind: str  # "verdict" or "label" (vocabulary.disagreements)
    raw_label: str
    wire_label: str
    explanation: Optional[Explanation]


def disagreements(result: Mapping[str, Any],
                  probes: Optional[Mapping[str, Any]]) -> Iterator[Disagreement]:
    """Every disagreement of one cell's raw result with each of its wire runs, explained
    where a schedule or a probed server fact accounts for it."""
    raw_clauses = result.get("clauses") or {}
    for server, run in results.server_runs(result).items():
        version = str(results.server_version(run) or "")
        facts = facts_of(probes, server, version)
        for found in vocabulary.disagreements(raw_clauses, run.get("clauses") or {}):
            clause = found["clause"]
            case = Case(clause, server, version, raw_clauses[clause],
                        run["clauses"][clause], result, facts)
            yield Disagreement(result["cell"]["id"], clause, server, version, found["kind"],
                               found["raw"]["label"], found["wire"]["label"], explain(case))
