"""Wire mode: the clauses where a real client matters, re-observed through a real ASGI server.

The spec suite drives applications over raw ASGI (tests/spec/harness.py), which decides
exactly when ``http.disconnect`` arrives and sees every ``send``.  Wire mode is the second
evidence source for a few of the same clauses: inside the cell's own environment it installs
the uvicorn release that was current at the cell's cutoff, serves tests/wire/apps.py on
127.0.0.1 (a port the OS chose) and drives it with httpx from the host, so the body a client
receives, the moment it receives it and its disconnects are those of a real socket.

Evidence crosses the process boundary through files in a temporary folder: the server appends
every task effect, warning and end of request to an effect log; the host creates a gate file
once its client holds the complete body, and a gated task waits for that file.  A task that
ran before the body was sent would hold the body back, so "the client has the body while the
task is still held" is the proof, not a sleep.  Labels come from the suite's own label
functions (tests/spec/oracle.py and its siblings), so both sources speak one vocabulary and
:func:`disagreements` can compare them clause by clause.

Every server is started and stopped here, never left running: it runs in its own process
group, which is terminated (then killed) when the run ends, fails or overruns its budget.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType

import httpx

from bgmatrix import vocabulary
from bgmatrix.errors import BgmatrixError
from bgmatrix.run import env
from bgmatrix.spec import ROOT

# Re-exported: the comparison lives in the vocabulary, which the site shares.
from bgmatrix.vocabulary import CASE_PAIRS, disagreements, label_parts  # noqa: F401

WIRE_APPS = ROOT / "tests" / "wire"
SERVE = WIRE_APPS / "serve.py"
SUITE_DIR = ROOT / "tests" / "spec"

#: The clauses wire mode observes; the FastAPI-level ones need FastAPI in the cell.
CLAUSES = ("EXEC-1", "MW-1", "MW-2", "MW-3", "MW-7", "ATTACH-3", "ATTACH-6", "ISO-1", "ISO-6")
FASTAPI_LEVEL = ("ATTACH-3", "ATTACH-6", "ISO-1", "ISO-6")
#: ISO-6 on the wire: clients in flight at once, and the seconds they may take together.
CONCURRENT_CLIENTS = 100
CONCURRENT_BUDGET = 10.0
STATES = ("ok", "wire-unavailable", "timeout", "error")

INSTALL_TIMEOUT = 300  # seconds for installing uvicorn into the cell (a cold cache is slow)
START_TIMEOUT = 20.0  # seconds from spawn to a served /ping: old cells import slowly
REQUEST_TIMEOUT = 3.0  # seconds a request without a gate may take
BODY_WAIT = 1.0  # seconds the client waits for a body while a task holds its gate
GATE_DEADLINE = 3.0  # seconds a task holds at its gate; longer than BODY_WAIT on purpose
SETTLE = 3.0  # seconds for a request's application call to end once its gate is open
NOTICE = 0.3  # seconds the server gets to notice a client's disconnect before the gate opens
BUDGET = 30.0  # seconds for all scenarios of one cell; past it the run is a "timeout"
STOP_GRACE = 1.5  # seconds between SIGTERM and SIGKILL when the server is stopped
_POLL = 0.01  # seconds between looks at the effect log: a bounded wait, never a proof

_EXEC1_CASES = ("response", "stream", "file")
_MW1_CASES = ("response", "stream")
_MW2_MODES = ("keep-open", "close-after-read")
_MW3_KINDS = ("sync", "async", "async-awaits")  # as tests/wire/apps.py RAISING_KINDS
MW3_MARKER = "inner task failed"  # as tests/wire/apps.py MARKER


class WireUnavailable(BgmatrixError):
    """No server can be run in this cell: no uvicorn fits, or it cannot serve the apps."""


class WireTimeout(BgmatrixError):
    """The scenarios did not finish within :data:`BUDGET`."""


#: The in-cell suite's label modules wire mode borrows (``suite_module``): part of its method.
BORROWED = ("oracle.py", "labels_exec.py", "labels_life.py")


@cache
def wire_hash() -> str:
    """A short hash of everything that decides a wire observation and its verdict: the apps,
    the launcher, this file, the label functions it borrows from the suite and the vocabulary
    it grades with. A result's wire section whose hash differs is stale (results.carry_over)."""
    digest = hashlib.sha256()
    borrowed = [SUITE_DIR / name for name in BORROWED]
    vocabulary_file = Path(vocabulary.__file__)
    for path in sorted(WIRE_APPS.glob("*.py")) + [Path(__file__), vocabulary_file, *borrowed]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


# -- the suite's label functions ---------------------------------------------------------------


@cache
def suite_module(name: str) -> ModuleType:
    """A module of tests/spec (``oracle``, ``labels_exec``, ``labels_life``), loaded by path.

    The label modules import ``oracle`` by its bare name, as they do inside a cell, so the
    modules are registered under their bare names (the same ones tests/unit's conftest uses).
    """
    if name != "oracle":
        suite_module("oracle")
    path = SUITE_DIR / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- installing and serving --------------------------------------------------------------------


#: The servers wire mode runs (issue 13: the servers people deploy), each with what it needs
#: installed. ``uvicorn`` is the primary source, a result's ``wire``; the others are its
#: ``servers``.  ``uvicorn-fast`` is uvicorn with httptools and uvloop (``uvicorn[standard]``).
SERVERS = {
    "uvicorn": ("uvicorn",),
    "uvicorn-fast": ("uvicorn", "httptools", "uvloop"),
    "hypercorn": ("hypercorn",),
    "granian": ("granian",),
    "daphne": ("daphne",),
}
OTHER_SERVERS = tuple(name for name in SERVERS if name != "uvicorn")

#: uvicorn's compiled accelerators, never imported by plain ``uvicorn`` (the server is asked
#: for h11 and the stdlib loop in every cell) and not buildable on every interpreter (uvloop
#: 0.13 fails on Python 3.8): an override with a marker that never holds takes them out of the
#: resolution, while uvicorn's own pins on everything it does use (h11, click) still apply.
UNUSED_ACCELERATORS = ("uvloop", "httptools")


def install_server(python: Path, cell: dict, name: str = "uvicorn",
                   target: Path | None = None) -> dict:
    """Install the server ``name`` as of the cell's cutoff, leaving every installed package
    as it is.

    Everything the suite ran with is pinned by a constraints file, so the server cannot move
    the framework; the server and what it needs are resolved with the cell's
    ``--exclude-newer``, so a server that did not exist yet at the cutoff does not install.
    ``uvicorn`` goes into the cell's environment; every other server into ``target``, a folder
    of its own put on the server's ``PYTHONPATH``, so that two servers' needs never meet.
    Returns the server's version and the packages added; raises :class:`WireUnavailable` with
    the resolver's words when no release fits.
    """
    before = env.freeze(python)
    cmd = [env.uv(), "pip", "install", "-q", "--python", str(python)]
    if target is not None:
        cmd += ["--target", str(target)]
    if cell.get("cutoff"):
        cmd += ["--exclude-newer", cell["cutoff"]]
        for tool in env.BUILD_TOOLS:  # as in build_env: sdists need today's tools
            cmd += ["--exclude-newer-package", f"{tool}=false"]
    with tempfile.TemporaryDirectory(prefix="bgmatrix-wire-pins-") as tmp:
        pins, overrides = Path(tmp) / "constraints.txt", Path(tmp) / "overrides.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(before.items())))
        unused = UNUSED_ACCELERATORS if name == "uvicorn" else ()
        overrides.write_text("".join(f'{n}; python_version < "0"\n' for n in unused))
        cmd += ["--constraint", str(pins), "--override", str(overrides), *SERVERS[name]]
        try:
            rc, out = env.run(cmd, INSTALL_TIMEOUT, env.uv_env())
        except subprocess.TimeoutExpired:
            rc, out = 1, f"installing {name} did not finish in {INSTALL_TIMEOUT}s"
    if rc:
        raise WireUnavailable(f"no {name} as of the cell's cutoff installs with the cell's "
                              "packages: " + env.tail(out))
    after = env.freeze(python)
    changed = {n: [before[n], after.get(n)] for n in before if after.get(n) != before[n]}
    if changed:  # the constraints forbid it; a resolver that ignored them is caught here
        raise WireUnavailable(f"installing {name} changed the cell's packages: {changed}")
    added = ({n: v for n, v in sorted(after.items()) if n not in before} if target is None
             else _distributions(target))
    distribution = SERVERS[name][0]
    return {"version": added.get(distribution) or after.get(distribution), "added": added}


def _distributions(folder: Path) -> dict[str, str]:
    """``{name: version}`` of the distributions installed into ``folder`` (``--target``)."""
    found = {}
    for info in folder.glob("*.dist-info"):
        dist, _, version = info.name[: -len(".dist-info")].rpartition("-")
        found[dist.lower().replace("_", "-")] = version
    return dict(sorted(found.items()))


@dataclass
class Server:
    """One server process serving tests/wire/apps.py from the cell's interpreter."""

    proc: subprocess.Popen
    port: int
    folder: Path
    announced: dict
    info: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _server_env(cell: dict, folder: Path, name: str = "uvicorn",
                target: Path | None = None) -> dict:
    extra = {"PYTHONPATH": str(target)} if target is not None else {}
    return {
        **extra,
        "BGMATRIX_WIRE_SERVER": name,
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "BGMATRIX_KIND": cell["kind"],
        "BGMATRIX_WIRE_DIR": str(folder),
        "BGMATRIX_WIRE_GATE_DEADLINE": str(GATE_DEADLINE),
        # The server ends itself if this process dies without stopping it (serve.py).
        "BGMATRIX_WIRE_LIFETIME": str(START_TIMEOUT + BUDGET + 60),
    }


def _stderr_tail(folder: Path) -> str:
    try:
        return env.tail((folder / "server.err").read_text(errors="replace"))
    except OSError:
        return ""


def _announcement(proc: subprocess.Popen, folder: Path) -> dict:
    """The launcher's first stdout line (its port), waiting at most :data:`START_TIMEOUT`."""
    out = folder / "server.out"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        first = out.read_text(errors="replace").partition("\n")
        if first[1]:
            try:
                return json.loads(first[0])
            except json.JSONDecodeError:
                raise WireUnavailable("the server printed no port: " + first[0][:300]) from None
        if proc.poll() is not None:
            raise WireUnavailable(f"the server exited ({proc.returncode}) before serving: "
                                  + _stderr_tail(folder))
        time.sleep(_POLL)
    raise WireUnavailable(f"the server printed no port within {START_TIMEOUT}s: "
                          + _stderr_tail(folder))


def stop(proc: subprocess.Popen) -> None:
    """End the server's process group: SIGTERM, then SIGKILL after :data:`STOP_GRACE`.

    The group is signalled only while the launcher is not yet reaped: until then its pid,
    which is the group's id (``start_new_session``), cannot belong to anything else.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(STOP_GRACE if sig == signal.SIGTERM else 10.0)
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def serving(python: Path, cell: dict, folder: Path, name: str = "uvicorn",
            target: Path | None = None) -> Iterator[Server]:
    """Start the launcher, wait until /ping answers, yield the server; always stop it."""
    with open(folder / "server.out", "wb") as out, open(folder / "server.err", "wb") as err:
        proc = subprocess.Popen(
            [str(python), str(SERVE)], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=_server_env(cell, folder, name, target), cwd=str(folder),
            start_new_session=True,
        )
    try:
        announced = _announcement(proc, folder)
        server = Server(proc, int(announced["port"]), folder, announced)
        try:
            server.info = _ping(server, proc)
        except (httpx.HTTPError, ValueError) as exc:
            raise WireUnavailable(f"the server did not serve /ping ({type(exc).__name__}: "
                                  f"{exc}): " + _stderr_tail(folder)) from None
        yield server
    finally:
        stop(proc)


def _ping(server: Server, proc: subprocess.Popen) -> dict:
    """``/ping``'s answer.  A server that binds its own socket after printing the port
    (``handover: port``) may refuse the first connections: they are retried until
    :data:`START_TIMEOUT`, while the server lives."""
    deadline = time.monotonic() + START_TIMEOUT
    with _client(server, START_TIMEOUT) as client:
        while True:
            try:
                response = client.get("/ping")
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(_POLL)
    response.raise_for_status()
    return response.json()


def _client(server: Server, read: float) -> httpx.Client:
    # trust_env=False: no proxy from the environment ever sees a loopback request.
    return httpx.Client(base_url=server.base_url, trust_env=False,
                        timeout=httpx.Timeout(read, connect=2.0))


# -- the host's view of one run ----------------------------------------------------------------


@dataclass
class Fetched:
    """What the client got: the status and whether the complete body arrived."""

    status: int | None = None
    complete: bool = False
    size: int = 0
    error: str | None = None


class Wire:
    """Drives one server: requests, the effect log, gates, and the run's budget."""

    def __init__(self, server: Server, budget: float | None = None):
        self.server = server
        self.budget = BUDGET if budget is None else budget
        self.deadline = time.monotonic() + self.budget

    def check(self, scenario: str) -> None:
        if time.monotonic() > self.deadline:
            raise WireTimeout(f"the wire run exceeded its {self.budget:g}s budget before "
                              f"{scenario}")

    def client(self, read: float = REQUEST_TIMEOUT) -> httpx.Client:
        return _client(self.server, read)

    # -- the effect log --------------------------------------------------------------------
    def log(self) -> list[dict]:
        path = self.server.folder / "effects.jsonl"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written right now: read again later
        return entries

    def effects(self, run: str, by: str = "origin") -> list[dict]:
        """Entries of request ``run``: tasks it created (``origin``) or that ran in it (``run``)."""
        return [e for e in self.log() if e.get(by) == run]

    def wait_for(self, run: str, names: set[str], limit: float) -> bool:
        """Wait up to ``limit`` seconds for an entry of ``run`` named in ``names``."""
        end = time.monotonic() + limit
        while True:
            if any(e["name"] in names for e in self.effects(run)):
                return True
            if time.monotonic() > end:
                return False
            time.sleep(_POLL)

    def settled(self, run: str) -> bool:
        """Wait until the application call of ``run`` (its background included) has ended."""
        return self.wait_for(run, {"app-returned"}, SETTLE)

    def finished(self, run: str) -> bool:
        """:meth:`settled`, then up to :data:`SETTLE` s more for a started task to end: a task
        orphaned by its request (the app returned while it held) runs on in the server, and
        waiting for it keeps the evidence the same from one run to the next."""
        settled = self.settled(run)
        if "start" in names(self.effects(run)):
            self.wait_for(run, {"end", "cancelled"}, SETTLE)
        return settled

    def release(self, run: str) -> None:
        (self.server.folder / f"gate-{run}").touch()

    # -- requests --------------------------------------------------------------------------
    def read(self, client: httpx.Client, path: str, wait: float) -> Fetched:
        """GET ``path`` and read the complete body, giving up after ``wait`` s of silence."""
        got = Fetched()
        try:
            with client.stream("GET", path, timeout=httpx.Timeout(wait, connect=2.0)) as r:
                got.status = r.status_code
                got.size = len(r.read())
                got.complete = True
        except httpx.HTTPError as exc:
            got.error = type(exc).__name__
        return got

    def get(self, path: str) -> Fetched:
        with self.client() as client:
            return self.read(client, path, REQUEST_TIMEOUT)


def names(entries: list[dict], kind: str = "task") -> list[str]:
    return [e["name"] for e in entries if e["kind"] == kind]


def warnings_of(entries: list[dict]) -> list[dict]:
    """Warnings in the shape the oracle reads (category, message, user_warning)."""
    return [{"category": e["category"], "message": e["message"],
             "user_warning": e["user_warning"]} for e in entries if e["kind"] == "warning"]


def as_events(entries: list[dict]) -> list[dict]:
    """The effect log in the harness's event-log shape, for the suite's label functions."""
    events = []
    for seq, e in enumerate(entries):
        if e["kind"] == "task":
            events.append({"seq": seq, "kind": "effect", "name": e["name"]})
        elif e["name"] in ("app-returned", "app-exception"):
            events.append({"seq": seq, "kind": e["name"]})
    return events


def gate_label(got: Fetched, effects: list[str]) -> str:
    """EXEC-1 / MW-1 over the wire: did the complete body reach the client while the task held?

    The gate opens only after the client has the whole body (or gave up waiting for it), so a
    complete body is one the client got while the task was still held, unless the task had
    already given up on its gate.  ``after-body``: that; ``before-body``: the body did not
    arrive within :data:`BODY_WAIT` although the task had started (it held the body back), or
    arrived only once the task gave up; ``no-task``: the body arrived and no task started;
    ``no-body``: neither.  What became of the task afterwards (cancelled?) is MW-2's concern.
    """
    if "start" not in effects:
        return "no-task" if got.complete else "no-body"
    if got.complete and "gate-timeout" not in effects:
        return "after-body"
    return "before-body"


def _clause(verdict: str, label: str, evidence: dict) -> dict:
    return {"verdict": verdict, "label": label, "evidence": evidence}


def _graded(conforms: bool, label: str, evidence: dict, settled: bool = True,
            statuses: tuple[int | None, ...] = ()) -> dict:
    """The clause's verdict.  ``error`` when one of the apps' own requests did not answer 200
    (the wire apps broke in this cell: nothing about the clause was seen); ``timeout`` when a
    request's application call did not end within :data:`SETTLE` after its gate opened."""
    wrong = sorted({s for s in statuses if s is not None and s != 200})
    if wrong:
        return _clause("error", "status-" + ",".join(map(str, wrong)), evidence)
    if not settled:
        return _clause("timeout", label, evidence)
    return _clause("conforms" if conforms else "deviates", label, evidence)


def _joined(labels: dict[str, str]) -> str:
    """Case labels joined the way results.aggregate joins a clause's test labels."""
    return "; ".join(sorted({f"{case}:{label}" for case, label in labels.items()}))


# -- the scenarios -----------------------------------------------------------------------------


def gated(wire: Wire, path: str, run: str) -> tuple[Fetched, list[dict], bool]:
    """Request ``path``; open the task's gate once the client has the body (or gave up).

    The connection stays open until the request has settled, so no disconnect reaches the
    app unless the client gave up on the body (MW-2 is where disconnects are the subject).
    """
    with wire.client() as client:
        got = wire.read(client, f"{path}?run={run}", BODY_WAIT)
        wire.release(run)
        settled = wire.finished(run)
    return got, wire.effects(run), settled


def gated_cases(wire: Wire, clause: str, prefix: str, cases: list[str]) -> dict:
    """EXEC-1 and MW-1: each response kind, its task held until the client has the body."""
    labels, evidence, settled, statuses = {}, {}, True, []
    for case in cases:
        wire.check(f"{clause} {case}")
        got, entries, done = gated(wire, f"{prefix}/{case}", f"{clause}-{case}".lower())
        settled &= done
        statuses.append(got.status)
        effects = names(entries)
        labels[case] = gate_label(got, effects)
        # What became of the task once its gate opened races with the server noticing a
        # client that gave up; that is MW-2's subject, so only the facts before are kept.
        evidence[case] = {"body_complete": got.complete, "task_started": "start" in effects,
                          "task_gave_up": "gate-timeout" in effects}
    conforms = all(label == "after-body" for label in labels.values())
    return _graded(conforms, _joined(labels), evidence, settled, tuple(statuses))


def exec1(wire: Wire) -> dict:
    """EXEC-1: a plain response, a stream and a file (where FileResponse works here)."""
    missing = wire.server.info.get("file_response")
    result = gated_cases(wire, "EXEC-1", "/exec1",
                         [c for c in _EXEC1_CASES if c != "file" or missing is None])
    if missing:
        result["evidence"]["file"] = {"skipped": missing}
    return result


def mw1(wire: Wire) -> dict:
    """MW-1 under a pass-through BaseHTTPMiddleware: a plain response and a stream.

    The raw suite has the plain response only.  Over the wire the two differ where the
    middleware relays the inner body at once and holds back only its final, empty body
    message: a client reading by Content-Length has every byte by then, a chunked stream's
    client waits for the last chunk.
    """
    return gated_cases(wire, "MW-1", "/mw", list(_MW1_CASES))


def mw3(wire: Wire) -> dict:
    """MW-3 under a pass-through BaseHTTPMiddleware: a task that raises, in each of the raw
    suite's task shapes (sync, ``async def`` at once, ``async def`` after an ``await``).

    ``propagated`` when the task's exception left the application (the server saw it),
    ``swallowed`` when the call ended without it; the evidence keeps whether the client got
    the complete body, the review's "swallowed and the response completed".
    """
    labels, evidence, settled = {}, {}, True
    propagation = suite_module("labels_exec").propagation_label
    for kind in _MW3_KINDS:
        wire.check(f"MW-3 {kind}")
        run = f"mw-3-{kind}"
        with wire.client() as client:
            got = wire.read(client, f"/mw/raise/{kind}?run={run}", BODY_WAIT)
            settled &= wire.settled(run)
        markers = [e for e in wire.effects(run) if e["kind"] == "marker"]
        left = [e for e in markers if e["name"] == "app-exception"]
        seen = {"leaves": left[0].get("leaves", [])} if left else None
        labels[kind] = propagation(seen, "RuntimeError", MW3_MARKER)
        evidence[kind] = {"status": got.status, "body_complete": got.complete,
                          "task_ran": "task" in names(wire.effects(run)),
                          "left_app": seen}
    conforms = set(labels.values()) == {"propagated"}
    return _graded(conforms, _joined(labels), evidence, settled)


def task_fate(entries: list[dict]) -> str:
    """MW-2 over the wire, in the suite's words (labels_exec.completion_label).

    ``outlived-app`` keeps the suite's meaning, the task was still running when the
    application call returned, even when it then finished: the raw harness cancels such an
    orphan when it closes the request's loop, uvicorn's loop lets it run on (the evidence
    says whether it finished), and a server shutting down would drop it.
    """
    label = suite_module("labels_exec").completion_label(as_events(entries), "start", "end",
                                                         "cancelled")
    order = [e["name"] for e in entries]
    if label == "completed" and "app-returned" in order and (
            order.index("end") > order.index("app-returned")):
        return "outlived-app"
    return label


def mw2(wire: Wire) -> dict:
    """MW-2 under a pass-through BaseHTTPMiddleware, the inner task held at its gate.

    ``keep-open``: the client keeps its connection while the gate opens; ``close-after-read``:
    it reads the whole body, closes the connection, and the gate opens once the server had
    :data:`NOTICE` s to see that (sooner if the task was cancelled).  A task still running
    when its request's application call ended gets :data:`SETTLE` s more to finish
    (:meth:`Wire.finished`).
    """
    labels, evidence, settled, statuses = {}, {}, True, []
    for mode in _MW2_MODES:
        wire.check(f"MW-2 {mode}")
        run = f"mw-2-{mode}"
        client = wire.client()
        try:
            got = wire.read(client, f"/mw/response?run={run}", BODY_WAIT)
            if mode == "close-after-read":
                client.close()
                wire.wait_for(run, {"cancelled", "disconnect"}, NOTICE)
            wire.release(run)
            settled &= wire.finished(run)
        finally:
            client.close()
        statuses.append(got.status)
        entries = wire.effects(run)
        labels[mode] = task_fate(entries)
        evidence[mode] = {"body_complete": got.complete, "effects": names(entries),
                          "disconnect_received": "disconnect" in names(entries, "marker")}
        if labels[mode] == "outlived-app":
            evidence[mode]["orphan_finished"] = "end" in names(entries)
    return _graded(all(v == "completed" for v in labels.values()), _joined(labels), evidence,
                   settled, tuple(statuses))


def mw7(wire: Wire) -> dict:
    """MW-7: the client reads the first chunk of a stream and closes the connection."""
    ran_label = suite_module("labels_exec").ran_label
    wire.check("MW-7")
    run = "mw7"
    first, status = 0, None
    with wire.client(BODY_WAIT) as client:
        try:
            with client.stream("GET", f"/mw7?run={run}") as response:
                status = response.status_code
                for chunk in response.iter_raw():
                    first = len(chunk)
                    break
        except httpx.HTTPError:
            pass
    # Leaving the block closed the connection with the body unread.  The stream holds at its
    # gate until the server had a moment to see that, so the disconnect is mid-stream.
    stopped = wire.wait_for(run, {"stream-stopped", "disconnect"}, NOTICE)
    wire.release(run)
    settled = wire.settled(run)
    entries = wire.effects(run)
    effects = names(entries)
    label = ran_label(effects, "background")
    exception = [e for e in entries if e["name"] == "app-exception"]
    evidence = {
        "first_chunk_bytes": first,
        "disconnect_noticed": stopped,
        "stream_stopped": "stream-stopped" in effects,
        "chunks_after_disconnect": len([n for n in effects if n.startswith("chunk-")]) - 1,
        "app_exception": exception[0]["type"] if exception else None,
    }
    return _graded(label == "ran", label, evidence, settled, (status,))


def attach3(wire: Wire) -> dict:
    """ATTACH-3 (FastAPI #11215): injected tasks and the Response's own BackgroundTask."""
    conflict_label = suite_module("oracle").conflict_label
    wire.check("ATTACH-3")
    got = wire.get("/attach3?run=attach3")
    settled = wire.settled("attach3")
    entries = wire.effects("attach3", by="run")
    warned = warnings_of(entries)
    label = conflict_label(names(entries), ["injected-1", "injected-2"], ["own"], warned)
    evidence = {"status": got.status, "effects": names(entries),
                "warnings": [w["message"][:200] for w in warned if w["user_warning"]]}
    verdict, _ = vocabulary.grade("ATTACH-3", label)
    return _graded(verdict == "conforms", label, evidence, settled, (got.status,))


def attach6(wire: Wire) -> dict:
    """ATTACH-6: the injected object returned as the Response's background runs once."""
    runs_label = suite_module("oracle").runs_label
    wire.check("ATTACH-6")
    got = wire.get("/attach6?run=attach6")
    settled = wire.settled("attach6")
    entries = wire.effects("attach6", by="run")
    label = runs_label(names(entries), ["a", "b"], warnings_of(entries))
    evidence = {"status": got.status, "effects": names(entries)}
    verdict, _ = vocabulary.grade("ATTACH-6", label)
    return _graded(verdict == "conforms", label, evidence, settled, (got.status,))


def iso1(wire: Wire, requests: int = 3) -> dict:
    """ISO-1: one module-level Response returned by three requests in a row, per variant."""
    life = suite_module("labels_life")
    variant_labels, evidence, settled, statuses = {}, {}, True, []
    for variant, own in (("no-background", []), ("own-task", ["own"])):
        labels, ran = [], []
        for n in range(1, requests + 1):
            wire.check(f"ISO-1 {variant} {n}")
            run = f"iso-{variant}-{n}"
            statuses.append(wire.get(f"/iso/{variant}?run={run}&n={n}").status)
            settled &= wire.settled(run)
            entries = wire.effects(run, by="run")  # what ran during this request
            effects = names(entries)
            earlier = [f"request-{m}" for m in range(1, n)]
            labels.append(life.reuse_label(effects, f"request-{n}", earlier, own,
                                           warnings_of(entries)))
            ran.append(effects)
        variant_labels[variant] = life.combine(labels)
        evidence[variant] = {"labels": labels, "effects": ran}
    conforms = all(set(e["labels"]) == {"isolated"} for e in evidence.values())
    # The raw result's label joins the variants' labels without naming them; so does this.
    label = "; ".join(sorted(set(variant_labels.values())))
    return _graded(conforms, label, evidence, settled, tuple(statuses))


def iso6(wire: Wire, clients: int = CONCURRENT_CLIENTS) -> dict:
    """ISO-6: ``clients`` concurrent httpx clients on loopback, each request adding two tasks
    named after its run; every task must run once, inside its own request's call."""
    import asyncio

    wire.check("ISO-6")
    runs = [f"c{n}" for n in range(clients)]

    async def all_clients() -> list[int | None]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=wire.server.base_url, trust_env=False,
                                     limits=limits,
                                     timeout=httpx.Timeout(CONCURRENT_BUDGET, connect=5.0)) as c:
            async def one(run: str) -> int | None:
                try:
                    return (await c.get(f"/concurrent?run={run}")).status_code
                except httpx.HTTPError:
                    return None
            return list(await asyncio.gather(*(one(run) for run in runs)))

    statuses = asyncio.run(asyncio.wait_for(all_clients(), CONCURRENT_BUDGET))
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:  # a bounded wait for every call to end
        returned = {e["run"] for e in wire.log() if e["name"] == "app-returned"}
        if returned >= set(runs):
            break
        time.sleep(_POLL)
    settled = {e["run"] for e in wire.log() if e["name"] == "app-returned"} >= set(runs)
    expected = {f"{run}-{s}": run for run in runs for s in ("a", "b")}
    ran = [(e["name"], e["run"]) for e in wire.log()
           if e["kind"] == "task" and e["name"] in expected]
    label = suite_module("labels_life").crossing_label(expected, ran)
    evidence = {"clients": clients, "statuses": sorted({str(s) for s in statuses}),
                "tasks_expected": len(expected), "tasks_ran": len(ran)}
    return _graded(label == "isolated", label, evidence, settled,
                   tuple(s if s is not None else 0 for s in statuses))


def scenarios(wire: Wire, fastapi_level: bool, into: dict[str, dict]) -> None:
    """Observe every clause wire mode covers, filling ``into`` as each one is done.

    Filled as it goes, so that a run stopped by :class:`WireTimeout` keeps what it saw.
    """
    if not fastapi_level:
        reason = "FastAPI-level clause; this cell runs pure Starlette apps"
        for clause in FASTAPI_LEVEL:
            into[clause] = {"verdict": "n/a", "label": "n/a", "reason": reason, "evidence": {}}
    into["EXEC-1"] = exec1(wire)
    into["MW-1"] = mw1(wire)
    into["MW-2"] = mw2(wire)
    into["MW-3"] = mw3(wire)
    into["MW-7"] = mw7(wire)
    if fastapi_level:
        into["ATTACH-3"] = attach3(wire)
        into["ATTACH-6"] = attach6(wire)
        into["ISO-1"] = iso1(wire)
        into["ISO-6"] = iso6(wire)


# -- the entry point ---------------------------------------------------------------------------


def observe(cell_python: Path, cell: dict, *, name: str = "uvicorn",
            servers: list[tuple[int, int]] | None = None) -> dict:
    """Run wire mode with the server ``name`` in the cell whose interpreter is
    ``cell_python``; never raises.

    Returns ``{"state", "message", "uvicorn", "wire_hash", "server", "clauses"}`` for uvicorn
    (a result's ``wire``), and ``{"state", "message", "version", "server", "clauses"}`` for
    another server (one of a result's ``servers``).  ``state`` is ``ok``,
    ``wire-unavailable`` (no release of the server fits the cell, or it cannot serve these
    apps; ``message`` says why), ``timeout`` (the run overran :data:`BUDGET`; the clauses
    observed before are kept) or ``error`` (the host side broke).  ``servers``, when given,
    receives the ``(pid, port)`` of every server started, for callers that check nothing was
    left behind.
    """
    primary = name == "uvicorn"
    result: dict = {"state": "ok", "message": None}
    result.update({"uvicorn": None, "wire_hash": wire_hash()} if primary else {"version": None})
    result.update(server={}, clauses={})
    try:
        with tempfile.TemporaryDirectory(prefix="bgmatrix-wire-") as tmp:
            target = None if primary else Path(tmp) / "server"
            installed = install_server(cell_python, cell, name, target)
            result["uvicorn" if primary else "version"] = installed["version"]
            result["server"] = {"added": installed["added"]}
            folder = Path(tmp) / "run"
            folder.mkdir()
            with serving(cell_python, cell, folder, name, target) as server:
                if servers is not None:
                    servers.append((server.proc.pid, server.port))
                result["server"].update(
                    interface=server.announced.get("interface"),
                    handover=server.announced.get("handover"),
                    asgi=(server.info.get("scope") or {}).get("asgi"),
                    framework=server.info.get("framework"),
                )
                try:
                    scenarios(Wire(server), server.info.get("framework") == "fastapi",
                              result["clauses"])
                except WireTimeout as exc:
                    result.update(state="timeout", message=str(exc))
    except WireUnavailable as exc:
        result.update(state="wire-unavailable", message=env.tail(str(exc)))
    except Exception as exc:  # a broken wire run is a recorded state, never a crashed sweep
        result.update(state="error", message=env.tail(
            f"{type(exc).__name__}: {exc}\n" + traceback.format_exc()))
    return result


def observe_servers(cell_python: Path, cell: dict, names: tuple[str, ...] = OTHER_SERVERS,
                    servers: list[tuple[int, int]] | None = None) -> dict:
    """Every server of ``names`` but uvicorn, one after the other: a result's ``servers``."""
    return {"servers_hash": wire_hash(),
            "runs": {name: observe(cell_python, cell, name=name, servers=servers)
                     for name in names}}
