"""Deployment mode: what becomes of a running background task when a deployment ends it.

The spec's Deployment chapter (spec/deployment.md, DEPLOY-1 to DEPLOY-4) is measured here, on
one cell at a time, through the real servers wire mode runs (bgmatrix/run/wire.py ``SERVERS``)
and through Mangum, an ASGI-to-AWS-Lambda adapter:

- ``disconnect`` (DEPLOY-1): the client reads the whole body while the task holds at its gate,
  closes its connection; then the gate opens.  Did the task reach its end?
- ``sigterm`` (DEPLOY-2): the client has the body, the task holds; the server's main process
  gets SIGTERM, as a process manager sends it; the gate opens :data:`OPEN_AFTER` s later,
  within every default graceful period there is.  Did the task end before the process exited?
- ``sigterm-graceful`` (DEPLOY-3): the same with the server's graceful-timeout option set to
  :data:`SHORT_GRACEFUL` s and the gate opened :data:`LATE_GATE` s after the signal.  Did the
  option cut the task off, or did the process wait for it?
- ``serverless`` (DEPLOY-4): one invocation of ``Mangum(app)(event, context)`` with an API
  Gateway HTTP API event, in a process of its own inside the cell; the host opens the gate
  once the task has started and :data:`HOLD` s have passed.  Had the task ended when the
  handler returned?

The apps, routes and gated task are wire mode's (tests/wire/apps.py ``/exec1/response``: a
plain response whose ``BackgroundTask`` records ``start``, waits for its gate file, then
``released`` and ``end``, or ``cancelled``); the launcher is tests/deploy/serve.py, which adds
the graceful option to wire mode's own.  Labels come from the effect log the server writes, and
from one coarse fact about time: whether the process had exited before the gate opened.  No
duration is recorded, so a re-run on another machine writes the same file.

Every server runs in its own process group and is always stopped; the group is killed once its
main process has exited, so a worker it left behind is killed too (and recorded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from bgmatrix import schemas
from bgmatrix.errors import DeployError, UsageError
from bgmatrix.files import read_checked, write_text_if_changed
from bgmatrix.plan import store
from bgmatrix.run import env, wire
from bgmatrix.spec import ROOT

DEPLOY_APPS = ROOT / "tests" / "deploy"
LAUNCHER = DEPLOY_APPS / "serve.py"
INVOKER = DEPLOY_APPS / "lambda_invoke.py"
DEPLOYMENT_PATH = ROOT / "matrix" / "deployment.json"

#: The scenarios, each with the clause it observes.
CLAUSES = {
    "disconnect": "DEPLOY-1",
    "sigterm": "DEPLOY-2",
    "sigterm-graceful": "DEPLOY-3",
    "serverless": "DEPLOY-4",
}
SERVER_SCENARIOS = ("disconnect", "sigterm", "sigterm-graceful")
ADAPTERS = {"mangum": ("mangum",)}
ROUTE = "/exec1/response"  # tests/wire/apps.py: a plain response, its task held at a gate

OPEN_AFTER = 1.0  # s from SIGTERM to the gate opening: inside hypercorn's default 3 s, the
#                   shortest default graceful period among the servers that have one
SHORT_GRACEFUL = 1  # s, the graceful option in ``sigterm-graceful``; whole seconds because
#                     uvicorn declares its option int and granian's CLI takes 1 s at least
LATE_GATE = 2.5  # s from SIGTERM to the gate opening in ``sigterm-graceful``: past the option
GATE_DEADLINE = 6.0  # s a gated task waits for its gate (apps.py): longer than every wait here
EXIT_BUDGET = 10.0  # s a process may take to exit after SIGTERM; past it: ``did-not-exit``
HOLD = 1.0  # s the serverless host waits, the task started, for a handler that does not wait
INVOKE_BUDGET = 30.0  # s for one Mangum invocation, interpreter start included
STATES = ("ok", "unavailable", "error")


@cache
def deploy_hash() -> str:
    """A short hash of what decides a deployment observation: this file, the launcher and the
    invoker, and wire mode's apps and launcher they reuse."""
    digest = hashlib.sha256()
    for path in [Path(__file__), *sorted(DEPLOY_APPS.glob("*.py")),
                 *sorted(wire.WIRE_APPS.glob("*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


# -- labels: pure functions of the effect log ----------------------------------------------------


def disconnect_label(effects: list[str]) -> str:
    """DEPLOY-1: ``completed`` (the task reached its end after the client left), ``cancelled``
    (the server or framework cancelled it), ``gave-up`` (it never saw its gate open: the gate
    opened only after its deadline), ``unfinished`` (started, neither ended nor cancelled),
    ``no-task`` (it never started)."""
    if "start" not in effects:
        return "no-task"
    if "cancelled" in effects:
        return "cancelled"
    if "gate-timeout" in effects:
        return "gave-up"
    if "released" in effects and "end" in effects:
        return "completed"
    return "unfinished"


def shutdown_label(effects: list[str], exit_seen: str) -> str:
    """DEPLOY-2 and DEPLOY-3: what the task's effects, read once the process had exited, say.

    ``finished`` (released and ended before the exit), ``cancelled`` (the server cancelled it:
    its ``except CancelledError`` ran), ``killed`` (the process ended while the task held,
    nothing recorded: no cancellation reached it), ``gave-up`` (it stopped waiting at its gate
    deadline), ``did-not-exit`` (the process was still running :data:`EXIT_BUDGET` s after
    the signal and was killed), ``no-task``.  ``exit_seen`` is :func:`exit_fact`'s value.
    """
    if exit_seen == "did-not-exit":
        return "did-not-exit"
    # The task's own fate reads as at a disconnect; only the words for its two ends differ.
    fate = disconnect_label(effects)
    return {"completed": "finished", "unfinished": "killed"}.get(fate, fate)


def exit_fact(exited: bool, effects: list[str]) -> str:
    """When the process exited, relative to the task, never as a duration: ``after-task``
    (the task's end is in the log the process left), ``before-task-ended`` (it is not),
    ``did-not-exit`` (still running :data:`EXIT_BUDGET` s after the signal).  Not relative to
    the gate: a server that cancels the task at once may take a moment more or less than
    :data:`OPEN_AFTER` to exit (daphne did both in two runs), which says nothing of the task."""
    if not exited:
        return "did-not-exit"
    return "after-task" if "end" in effects else "before-task-ended"


def serverless_label(order: list[str]) -> str:
    """DEPLOY-4 from the order of effects and markers in the invocation's log:
    ``ran-before-return`` (the task's end precedes ``handler-returned``),
    ``returned-before-task-ended`` (the handler returned while the task held or before it
    ended), ``cancelled``, ``no-task`` (it never started), ``handler-failed`` (the handler
    did not return)."""
    if "handler-returned" not in order:
        return "handler-failed"
    if "start" not in order:
        return "no-task"
    returned = order.index("handler-returned")
    if "end" in order and order.index("end") < returned:
        return "ran-before-return"
    if "cancelled" in order and order.index("cancelled") < returned:
        return "cancelled"
    return "returned-before-task-ended"


#: Labels that meet each clause; any other label deviates.  DEPLOY-3 is ``n/a`` where the
#: server has no graceful-timeout option.
MEETS = {
    "DEPLOY-1": {"completed"},
    "DEPLOY-2": {"finished"},
    "DEPLOY-3": {"cancelled", "killed"},
    "DEPLOY-4": {"ran-before-return"},
}


def verdict(clause: str, label: str) -> str:
    if label == "n/a":
        return "n/a"
    return "conforms" if label in MEETS[clause] else "deviates"


# -- installing -------------------------------------------------------------------------------


def install_adapter(python: Path, cell: dict, name: str, target: Path) -> dict:
    """Install the adapter ``name`` (:data:`ADAPTERS`) as of the cell's cutoff into ``target``,
    the cell's packages pinned, as wire.install_server does for a server of its own folder."""
    before = env.freeze(python)
    cmd = [env.uv(), "pip", "install", "-q", "--python", str(python), "--target", str(target)]
    if cell.get("cutoff"):
        cmd += ["--exclude-newer", cell["cutoff"]]
        for tool in env.BUILD_TOOLS:
            cmd += ["--exclude-newer-package", f"{tool}=false"]
    with tempfile.TemporaryDirectory(prefix="bgmatrix-deploy-pins-") as tmp:
        pins = Path(tmp) / "constraints.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(before.items())))
        cmd += ["--constraint", str(pins), *ADAPTERS[name]]
        try:
            rc, out = env.run(cmd, wire.INSTALL_TIMEOUT, env.uv_env())
        except subprocess.TimeoutExpired:
            rc, out = 1, f"installing {name} did not finish in {wire.INSTALL_TIMEOUT}s"
    if rc:
        raise wire.WireUnavailable(f"no {name} as of the cell's cutoff installs with the "
                                   "cell's packages: " + env.tail(out))
    added = wire._distributions(target)
    return {"version": added.get(ADAPTERS[name][0]), "added": added}


# -- serving ----------------------------------------------------------------------------------


def _launcher_env(cell: dict, folder: Path, name: str, target: Path,
                  graceful: float | None) -> dict:
    found = wire._server_env(cell, folder, name, target)
    found["BGMATRIX_WIRE_GATE_DEADLINE"] = str(GATE_DEADLINE)
    if graceful is not None:
        found["BGMATRIX_DEPLOY_GRACEFUL"] = str(graceful)
    return found


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is still running."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(proc: subprocess.Popen) -> bool:
    """Stop the server (wire.stop), then kill whatever of its group outlived the main process;
    True when something had. The group's id cannot be taken by another group while a member
    lives, so the kill reaches only processes this run started."""
    wire.stop(proc)
    if not group_alive(proc.pid):
        return False
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


@contextmanager
def serving(python: Path, cell: dict, folder: Path, name: str, target: Path,
            graceful: float | None = None,
            started: list[tuple[int, int]] | None = None) -> Iterator[wire.Server]:
    """tests/deploy/serve.py in its own process group until /ping answers; always ended."""
    with open(folder / "server.out", "wb") as out, open(folder / "server.err", "wb") as err:
        proc = subprocess.Popen(
            [str(python), str(LAUNCHER)], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=_launcher_env(cell, folder, name, target, graceful), cwd=str(folder),
            start_new_session=True,
        )
    try:
        announced = wire._announcement(proc, folder)
        server = wire.Server(proc, int(announced["port"]), folder, announced)
        if started is not None:
            started.append((proc.pid, server.port))
        try:
            server.info = wire._ping(server, proc)
        except (httpx.HTTPError, ValueError) as exc:
            raise wire.WireUnavailable(f"the server did not serve /ping ({type(exc).__name__})"
                                       ": " + wire._stderr_tail(folder)) from None
        yield server
    finally:
        end_group(proc)


def graceful_found(folder: Path) -> dict:
    """What the launcher found of the server's graceful option (tests/deploy/serve.py)."""
    try:
        return json.loads((folder / "graceful.json").read_text())
    except (OSError, ValueError):
        return {"option": None}


# -- the scenarios ----------------------------------------------------------------------------


def _body(w: wire.Wire, client: Any, run: str) -> wire.Fetched:
    """GET the route; the body is complete while the task holds (wire mode's EXEC-1 proof)."""
    got = w.read(client, f"{ROUTE}?run={run}", wire.BODY_WAIT)
    w.wait_for(run, {"start"}, wire.SETTLE)
    return got


def disconnect(server: wire.Server) -> dict:
    """DEPLOY-1: read the body, close the connection, then open the gate."""
    w, run = wire.Wire(server), "deploy-disconnect"
    client = w.client()
    try:
        got = _body(w, client, run)
    finally:
        client.close()
    w.wait_for(run, {"cancelled", "disconnect"}, wire.NOTICE)  # a bounded look, not the proof
    w.release(run)
    w.wait_for(run, {"end", "cancelled", "gate-timeout"}, wire.SETTLE)
    effects = wire.names(w.effects(run))
    label = disconnect_label(effects)
    return {"label": label, "evidence": {
        "status": got.status, "body_complete": got.complete, "effects": effects,
        "disconnect_received": "disconnect" in wire.names(w.effects(run), "marker")}}


def sigterm(server: wire.Server, open_after: float) -> dict:
    """DEPLOY-2 and DEPLOY-3: the body read, the task holding, SIGTERM to the main process;
    the gate opens ``open_after`` s later (unless the process is gone by then)."""
    w, run = wire.Wire(server), "deploy-sigterm"
    proc = server.proc
    with w.client() as client:  # kept open, as a keep-alive connection of a proxy would be
        got = _body(w, client, run)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(open_after)
        except subprocess.TimeoutExpired:
            pass  # still running: the gate opens now
        w.release(run)
        try:
            proc.wait(EXIT_BUDGET)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
    left = end_group(proc)  # a worker that outlived the main process is found (and killed)
    effects = wire.names(w.effects(run))
    exit_seen = exit_fact(exited, effects)
    return {"label": shutdown_label(effects, exit_seen), "evidence": {
        "status": got.status, "body_complete": got.complete, "effects": effects,
        "exit": exit_seen, "left_processes": left,
        "exit_code": proc.returncode if exited else None}}


def observe_server(python: Path, cell: dict, name: str,
                   started: list[tuple[int, int]] | None = None,
                   scenarios: tuple[str, ...] = SERVER_SCENARIOS) -> dict:
    """Every scenario of ``scenarios`` on the server ``name``; never raises.

    ``{"state", "message", "version", "graceful", "scenarios"}``: ``graceful`` is the option
    the launcher found (name and default); each scenario is ``{"clause", "label", "verdict",
    "evidence"}``."""
    result: dict = {"state": "ok", "message": None, "version": None, "graceful": None,
                    "scenarios": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="bgmatrix-deploy-") as tmp:
            target = Path(tmp) / "server"
            result["version"] = wire.install_server(python, cell, name, target)["version"]
            for scenario in scenarios:
                folder = Path(tmp) / scenario
                folder.mkdir()
                short = SHORT_GRACEFUL if scenario == "sigterm-graceful" else None
                with serving(python, cell, folder, name, target, short, started) as server:
                    found = graceful_found(folder)
                    if scenario != "sigterm-graceful":
                        result["graceful"] = {"option": found.get("option"),
                                              "default": found.get("default")}
                    if scenario == "disconnect":
                        seen = disconnect(server)
                    elif found.get("option") is None and scenario == "sigterm-graceful":
                        seen = {"label": "n/a", "evidence": {
                            "reason": f"{name} has no graceful-timeout option"}}
                    else:
                        seen = sigterm(server, LATE_GATE if short else OPEN_AFTER)
                        if short:
                            seen["evidence"]["option_set"] = found.get("set")
                clause = CLAUSES[scenario]
                result["scenarios"][scenario] = {"clause": clause, "label": seen["label"],
                                                 "verdict": verdict(clause, seen["label"]),
                                                 "evidence": seen["evidence"]}
    except wire.WireUnavailable as exc:
        result.update(state="unavailable", message=env.tail(str(exc)))
    except Exception as exc:  # a broken run is a recorded state, never a crashed command
        result.update(state="error", message=env.tail(
            f"{type(exc).__name__}: {exc}\n" + traceback.format_exc()))
    return result


def invoke(python: Path, folder: Path, target: Path, run: str) -> tuple[list[str], dict]:
    """One Mangum invocation in its own process group: the host opens the gate once the task
    started and :data:`HOLD` s passed (or the handler returned); returns the invocation's
    effects and markers in log order, and what the handler's process printed."""
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
               "PYTHONPATH": str(target), "BGMATRIX_WIRE_DIR": str(folder),
               "BGMATRIX_WIRE_GATE_DEADLINE": str(GATE_DEADLINE)}
    proc = subprocess.Popen([str(python), str(INVOKER), run, ROUTE], cwd=str(folder),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=environ, start_new_session=True)
    log = folder / "effects.jsonl"

    def order() -> list[str]:
        if not log.exists():
            return []
        entries = []
        for line in log.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return [e["name"] for e in entries if e.get("origin") == run or e.get("run") == run]

    try:
        deadline = time.monotonic() + INVOKE_BUDGET
        while "start" not in order() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(wire._POLL)
        held = time.monotonic() + HOLD
        while "handler-returned" not in order() and proc.poll() is None and (
                time.monotonic() < held):
            time.sleep(wire._POLL)
        (folder / f"gate-{run}").touch()
        try:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            return order(), {"error": f"the invocation did not end in {INVOKE_BUDGET:g}s"}
    finally:
        end_group(proc)
    printed: dict = {}
    if proc.returncode:
        printed["error"] = env.tail(err.decode(errors="replace"))
    else:
        try:
            printed = json.loads(out.decode().splitlines()[-1])
        except (ValueError, IndexError):
            printed["error"] = "the invoker printed nothing: " + env.tail(err.decode())
    return order(), printed


def observe_adapter(python: Path, cell: dict, name: str = "mangum") -> dict:
    """DEPLOY-4 through the adapter ``name``; never raises."""
    result: dict = {"state": "ok", "message": None, "version": None, "scenarios": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="bgmatrix-deploy-") as tmp:
            target = Path(tmp) / "adapter"
            result["version"] = install_adapter(python, cell, name, target)["version"]
            folder = Path(tmp) / "run"
            folder.mkdir()
            order, printed = invoke(python, folder, target, "deploy-serverless")
            label = serverless_label(order)
            evidence = {"order": order, "status": printed.get("status"),
                        "body_bytes": printed.get("body")}
            if printed.get("error"):
                evidence["error"] = printed["error"]
            result["scenarios"]["serverless"] = {
                "clause": "DEPLOY-4", "label": label, "verdict": verdict("DEPLOY-4", label),
                "evidence": evidence}
    except wire.WireUnavailable as exc:
        result.update(state="unavailable", message=env.tail(str(exc)))
    except Exception as exc:
        result.update(state="error", message=env.tail(
            f"{type(exc).__name__}: {exc}\n" + traceback.format_exc()))
    return result


def observe(python: Path, cell: dict, servers: tuple[str, ...] = tuple(wire.SERVERS),
            started: list[tuple[int, int]] | None = None) -> dict:
    """One cell's entry of matrix/deployment.json: every server, then every adapter."""
    return {
        "cell": {k: cell.get(k) for k in ("id", "fastapi", "starlette", "python", "cutoff")},
        "servers": {name: observe_server(python, cell, name, started) for name in servers},
        "adapters": {name: observe_adapter(python, cell, name) for name in ADAPTERS},
    }


# -- the file ---------------------------------------------------------------------------------


def load(path: Path = DEPLOYMENT_PATH) -> dict:
    """matrix/deployment.json, checked against schema/deployment.schema.json; a missing or
    invalid file is a one-line :class:`DeployError`."""
    data = read_checked(path, "deployment", DeployError, "deployment record")
    if data is None:
        raise DeployError(f"{path}: missing (run `bgmatrix deploy` to measure it)")
    return data


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write(data: dict, path: Path = DEPLOYMENT_PATH) -> None:
    found = schemas.problem(data, "deployment")
    if found is not None:  # never commit a record the schema refuses
        raise DeployError(f"deployment record: {found}")
    write_text_if_changed(path, dumps(data))  # a re-run that saw the same leaves the file


def record(cells: dict[str, dict], old: dict | None = None) -> dict:
    """The file's content: ``cells`` measured now, over the cells of ``old`` kept as they were."""
    kept = dict((old or {}).get("cells", {}))
    kept.update(cells)
    return {
        "about": "What becomes of a running background task when a deployment ends it "
                 "(spec/deployment.md), per server and adapter. Written by `bgmatrix deploy`.",
        "deploy_hash": deploy_hash(),
        "timing": {"open_after": OPEN_AFTER, "short_graceful": SHORT_GRACEFUL,
                   "late_gate": LATE_GATE, "exit_budget": EXIT_BUDGET, "hold": HOLD},
        "cells": dict(sorted(kept.items())),
    }


# -- the command ------------------------------------------------------------------------------


def newest_headline(cells: Sequence[Mapping[str, Any]]) -> dict:
    from packaging.version import Version

    headline = [c for c in cells if c["kind"] == "fastapi" and "headline" in c["tags"]]
    if not headline:
        raise DeployError("the plan has no FastAPI headline cell")
    return dict(max(headline, key=lambda c: Version(c["fastapi"])))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cells", nargs="*", metavar="CELL",
                   help="cell ids (default: the newest FastAPI headline cell)")
    p.add_argument("--server", action="append", choices=list(wire.SERVERS),
                   help="only this server (repeatable; default: every server)")
    p.add_argument("--out", default=str(DEPLOYMENT_PATH),
                   help="where the record goes (default: matrix/deployment.json)")


def command(args: argparse.Namespace) -> int:
    """``bgmatrix deploy``: exit 0 when every server and adapter was observed, 1 otherwise."""
    from bgmatrix.run import runner

    planned = store.load_cells()
    by_id: dict[str, dict[str, Any]] = {c["id"]: dict(c) for c in planned}
    unknown = [cid for cid in args.cells if cid not in by_id]
    if unknown:
        raise UsageError(f"not a cell of the plan: {', '.join(unknown)}")
    chosen = [by_id[cid] for cid in args.cells] or [newest_headline(planned)]
    out = Path(args.out)
    old = None
    if out.exists():
        old = load(out)  # a corrupt record is refused before anything slow starts
    servers = tuple(args.server or wire.SERVERS)
    measured: dict[str, dict] = {}
    complete = True
    for cell in chosen:
        with tempfile.TemporaryDirectory(prefix="bgmatrix-deploy-env-") as tmp:
            python = runner.build_env(cell, Path(tmp) / "env")
            entry = observe(Path(python), cell, servers)
        if args.server and old and cell["id"] in old["cells"]:  # other servers are kept
            entry["servers"] = {**old["cells"][cell["id"]]["servers"], **entry["servers"]}
        measured[cell["id"]] = entry
        for kind in ("servers", "adapters"):
            for name, run in entry[kind].items():
                complete &= run["state"] == "ok"
                labels = ", ".join(f"{s} {v['label']}" for s, v in run["scenarios"].items())
                print(f"{cell['id']} {name} {run['version']}: {run['state']}"
                      + (f" ({labels})" if labels else f" ({run['message']})"))
    write(record(measured, old), out)
    print(f"wrote {out}")
    return 0 if complete else 1
