"""``bgmatrix probe``: how each server delivers the protocol, measured with no framework.

Wire mode grades a framework *on* a server.  Where a server's label differs from the raw-ASGI
label (issue 13, item 6), the question is whether the framework meets a server that delivers
ASGI differently from the raw harness, or whether one of the two sources is wrong.  This
module answers with facts about the server alone: it serves the plain ASGI probe app
(tests/servers/apps.py) through the same launcher and options as wire mode, and records what
the server did:

``scope.extensions``, ``scope.spec_version``, ``scope.async_library``
    what the scope holds, and what ``sniffio`` (so anyio, so Starlette from 0.15) finds;
``after-final.keep-open``, ``after-final.close``
    whether the app keeps running after its final body message until its gate opens
    (``released``) or is cancelled, with the client still connected or gone;
``disconnect.keep-open``, ``disconnect.close``
    what ``receive()`` returns after the response: ``http.disconnect`` or ``nothing``;
``held-final.length``, ``held-final.chunked``
    whether the client holds the whole body before the final, empty body message is sent;
``send-after-close.receive``, ``.send``, ``.final-send``
    after a client left mid-stream: what ``receive()`` returns and whether ``send`` raises;
``final-send``
    whether the final ``send`` of a normally ended chunked stream raises;
``close-before-final``
    whether a client that closes once it holds a ``Content-Length`` body reaches the app as
    ``http.disconnect`` before the final, empty body message is sent;
``pending-receive``
    what a ``receive()`` pending while a stream is sent returns (or raises) once it ends;
``cancel-receive``
    whether a task cancelled with a message while in ``receive()`` sees that message
    (``kept-message``), as anyio's cancel scopes need, or the server's own.

Each timing-sensitive probe runs :data:`REPEATS` times; a fact whose outcomes differ is
recorded as all of them joined by ``|`` (the probe reports a race rather than picking a side).
One server release is probed in one cell that wire mode ran it in (the probe app needs no
framework, so any such cell serves).  The outcome is ``matrix/server-probes.json``: sorted,
without times, so a re-run that sees the same behaviour changes no byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bgmatrix import agreement, results
from bgmatrix.errors import UsageError
from bgmatrix.files import write_text_if_changed
from bgmatrix.plan import store
from bgmatrix.run import deploy, env, wire
from bgmatrix.spec import ROOT

PROBE_APPS = ROOT / "tests" / "servers"
LAUNCHER = PROBE_APPS / "serve.py"
PROBES_PATH = agreement.PROBES_PATH  # the record; bgmatrix/agreement.py reads it
FORMAT = 1
REPEATS = 3  # runs of each timing-sensitive probe
SETTLE = 4.0  # seconds for a probe's fact to appear: its gate deadline plus a margin
STATES = ("ok", "unavailable", "error")


# -- the server ---------------------------------------------------------------------------------


@contextmanager
def serving(python: Path, cell: dict, folder: Path, name: str,
            target: Path | None) -> Iterator[wire.Server]:
    """tests/servers/serve.py in its own process group until /ping answers; always ended
    (deploy.end_group: the group is killed once its main process has exited)."""
    with open(folder / "server.out", "wb") as out, open(folder / "server.err", "wb") as err:
        proc = subprocess.Popen(
            [str(python), str(LAUNCHER)], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=wire._server_env(cell, folder, name, target), cwd=str(folder),
            start_new_session=True,
        )
    try:
        announced = wire._announcement(proc, folder)
        server = wire.Server(proc, int(announced["port"]), folder, announced)
        try:
            server.info = wire._ping(server, proc)
        except (httpx.HTTPError, ValueError) as exc:
            raise wire.WireUnavailable(f"the server did not serve /ping ({type(exc).__name__})"
                                       ": " + wire._stderr_tail(folder)) from None
        yield server
    finally:
        deploy.end_group(proc)


class Probe:
    """Drives the probe app on one server: requests, the facts file and the gates."""

    def __init__(self, server: wire.Server):
        self.server = server
        self.count = 0

    def run_id(self, name: str) -> str:
        self.count += 1
        return f"{name}-{self.count}"

    def client(self, read: float = wire.REQUEST_TIMEOUT) -> httpx.Client:
        return wire._client(self.server, read)

    def facts(self, run: str) -> dict[str, Any]:
        path = self.server.folder / "facts.jsonl"
        found: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written right now
                if entry.get("run") == run:
                    found[entry["name"]] = entry["value"]
        return found

    def wait_for(self, run: str, name: str, limit: float = SETTLE) -> Any:
        """The fact ``name`` of ``run``, waiting up to ``limit`` s; ``None`` if it never came."""
        end = time.monotonic() + limit
        while True:
            found = self.facts(run)
            if name in found or time.monotonic() > end:
                return found.get(name)
            time.sleep(0.01)

    def release(self, run: str) -> None:
        (self.server.folder / f"gate-{run}").touch()

    def read(self, client: httpx.Client, path: str, wait: float) -> bool:
        """GET ``path`` and read the whole body within ``wait`` s of silence."""
        try:
            with client.stream("GET", path, timeout=httpx.Timeout(wait, connect=2.0)) as r:
                r.read()
                return r.status_code == 200
        except httpx.HTTPError:
            return False


# -- the probes: each returns one outcome (a short word) -----------------------------------------


def scope_facts(p: Probe) -> dict[str, Any]:
    with p.client() as client:
        found = client.get("/scope").json()
    return {f"scope.{k}": found.get(k) for k in ("async_library", "extensions", "spec_version")}


def _after_response(p: Probe, route: str, mode: str, fact: str, before_gate: bool) -> str:
    """GET ``route``; with ``mode=close`` the connection is closed once the body is read.
    The gate opens after :data:`wire.NOTICE` s, time for the server to notice a close."""
    run = p.run_id(f"{route}-{mode}")
    client = p.client()
    try:
        if not p.read(client, f"/{route}?run={run}", wire.REQUEST_TIMEOUT):
            return "no-response"
        if mode == "close":
            client.close()
        if before_gate:
            p.wait_for(run, fact, wire.NOTICE)  # a bounded look: a cancel is written at once
            p.release(run)
        return str(p.wait_for(run, fact))
    finally:
        client.close()


def after_final(p: Probe, mode: str) -> str:
    return _after_response(p, "after-final", mode, "after-final", before_gate=True)


def disconnect(p: Probe, mode: str) -> str:
    return _after_response(p, "disconnect", mode, "disconnect", before_gate=False)


def held_final(p: Probe, framing: str) -> str:
    run = p.run_id(f"held-final-{framing}")
    with p.client() as client:
        complete = p.read(client, f"/held-final?run={run}&framing={framing}", wire.BODY_WAIT)
        p.release(run)
        p.wait_for(run, "app-returned")
    return "body-complete" if complete else "body-held"


def send_after_close(p: Probe) -> dict[str, str]:
    run = p.run_id("send-after-close")
    with p.client(wire.BODY_WAIT) as client:
        try:
            with client.stream("GET", f"/send-after-close?run={run}") as response:
                for _ in response.iter_raw():
                    break  # the first chunk; leaving closes the connection mid-stream
        except httpx.HTTPError:
            pass
    time.sleep(wire.NOTICE)  # time for the server to see the close; the gate is the order
    p.release(run)
    p.wait_for(run, "final-send")
    found = p.facts(run)
    return {f"send-after-close.{k}": str(found.get(k)) for k in ("receive", "send", "final-send")}


def close_before_final(p: Probe) -> str:
    run = p.run_id("close-before-final")
    with p.client() as client:
        p.read(client, f"/close-before-final?run={run}", wire.BODY_WAIT)
    return str(p.wait_for(run, "close-before-final"))


def pending_receive(p: Probe) -> str:
    run = p.run_id("pending-receive")
    with p.client() as client:
        p.read(client, f"/pending-receive?run={run}", wire.REQUEST_TIMEOUT)
        return str(p.wait_for(run, "pending-receive"))


def cancel_receive(p: Probe) -> str:
    run = p.run_id("cancel-receive")
    with p.client() as client:
        p.read(client, f"/cancel-receive?run={run}", wire.REQUEST_TIMEOUT)
    return str(p.wait_for(run, "cancel-receive"))


def final_send(p: Probe) -> str:
    run = p.run_id("final-send")
    with p.client() as client:
        p.read(client, f"/final-send?run={run}", wire.REQUEST_TIMEOUT)
    return str(p.wait_for(run, "final-send"))


def measure(p: Probe) -> dict[str, Any]:
    """Every fact: the scope once, every other probe :data:`REPEATS` times."""
    seen: dict[str, set[str]] = {}

    def add(name: str, value: str) -> None:
        seen.setdefault(name, set()).add(value)

    for _ in range(REPEATS):
        for mode in ("keep-open", "close"):
            add(f"after-final.{mode}", after_final(p, mode))
            add(f"disconnect.{mode}", disconnect(p, mode))
        for framing in ("length", "chunked"):
            add(f"held-final.{framing}", held_final(p, framing))
        for name, value in send_after_close(p).items():
            add(name, value)
        add("final-send", final_send(p))
        add("close-before-final", close_before_final(p))
        add("pending-receive", pending_receive(p))
        add("cancel-receive", cancel_receive(p))
    facts: dict[str, Any] = {name: "|".join(sorted(values)) for name, values in seen.items()}
    facts.update(scope_facts(p))
    return dict(sorted(facts.items()))


# -- one server release -------------------------------------------------------------------------


def observe(python: Path, cell: dict, name: str, version: str) -> dict[str, Any]:
    """Probe the server ``name`` as installed in the cell; never raises."""
    entry: dict[str, Any] = {"server": name, "version": version, "cell": cell["id"],
                             "python": cell["python"], "state": "ok", "message": None,
                             "facts": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="bgmatrix-probe-") as tmp:
            target = None if name == "uvicorn" else Path(tmp) / "server"
            installed = wire.install_server(python, cell, name, target)
            if installed["version"] != version:
                entry.update(state="unavailable", message=(
                    f"the cell's cutoff now installs {name} {installed['version']}, "
                    f"not {version}"))
                return entry
            folder = Path(tmp) / "run"
            folder.mkdir()
            with serving(python, cell, folder, name, target) as server:
                entry["facts"] = measure(Probe(server))
    except wire.WireUnavailable as exc:
        entry.update(state="unavailable", message=env.tail(str(exc)))
    except Exception as exc:  # a broken probe is a recorded state, never a crashed run
        entry.update(state="error", message=env.tail(
            f"{type(exc).__name__}: {exc}\n" + traceback.format_exc()))
    return entry


def key(server: str, version: str) -> str:
    return f"{server} {version}"


def releases_in(folder: Path) -> dict[str, tuple[str, str]]:
    """Every server release a committed wire run served, with the cell to probe it in:
    ``{"granian 1.6.4": ("st-0.45.0_py3.9", "granian")}``.  The cell on the newest Python
    that ran it (then the first by id): a fact may depend on the interpreter (``cancel-receive``
    needs Python 3.9), and the newest one shows the most."""
    found: dict[str, tuple[tuple[int, ...], str, str]] = {}
    for path in results.result_paths(folder):
        stored = results.load_stored(path)
        python = tuple(int(p) for p in str(stored["cell"]["python"]).split("."))
        for server, run in results.server_runs(stored).items():
            version = results.server_version(run)
            if run.get("state") != "ok" or not version:
                continue
            release = key(server, version)
            if release not in found or python > found[release][0]:
                found[release] = (python, stored["cell"]["id"], server)
    return {release: (cell, server) for release, (_, cell, server) in sorted(found.items())}


# -- the file -------------------------------------------------------------------------------------


def probe_hash() -> str:
    """A short hash of what decides a probe's outcome: this file, the probe app and launcher,
    and wire mode's launcher they reuse.  A record made with another is stale."""
    digest = hashlib.sha256()
    for path in [Path(__file__), *sorted(PROBE_APPS.glob("*.py")), wire.SERVE]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def record(measured: Mapping[str, dict], old: Mapping[str, Any] | None) -> dict:
    """The file: earlier entries kept, the ones measured now replacing theirs."""
    releases = dict(old["releases"]) if old else {}
    releases.update(measured)
    return {"format": FORMAT, "about": __doc__.split("\n\n")[0], "probe_hash": probe_hash(),
            "repeats": REPEATS, "releases": dict(sorted(releases.items()))}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("releases", nargs="*", metavar="SERVER==VERSION",
                   help="server releases to probe, e.g. granian==0.4.3 (default: "
                        "every release a committed wire run served)")
    p.add_argument("--server", action="append", choices=sorted(wire.SERVERS),
                   help="only this server's releases")
    p.add_argument("--missing", action="store_true",
                   help="only releases the record does not hold yet")
    p.add_argument("--results", default=str(results.RESULTS_DIR))
    p.add_argument("--out", default=str(PROBES_PATH))


def _chosen(args: argparse.Namespace, served: dict[str, tuple[str, str]],
            old: Mapping[str, Any] | None) -> list[str]:
    wanted = []
    for text in args.releases:
        server, sep, version = text.partition("==")
        if not sep or key(server, version) not in served:
            raise UsageError(f"{text!r} is not a server release a committed wire run served "
                             "(name it as SERVER==VERSION, e.g. granian==0.4.3)")
        wanted.append(key(server, version))
    chosen = wanted or list(served)
    if args.server:
        chosen = [k for k in chosen if served[k][1] in args.server]
    if args.missing and old:
        chosen = [k for k in chosen if k not in old["releases"]]
    return chosen


def command(args: argparse.Namespace) -> int:
    """``bgmatrix probe``: exit 0 when every release chosen was probed, 1 otherwise."""
    from bgmatrix.run import runner

    out = Path(args.out)
    old = agreement.load_probes(out)  # a corrupt record is refused before any work
    served = releases_in(Path(args.results))
    chosen = _chosen(args, served, old)
    cells = {c["id"]: dict(c) for c in store.load_cells()}
    measured: dict[str, dict] = {}
    complete = True
    by_cell: dict[str, list[str]] = {}
    for release in chosen:  # one environment per cell, whatever it serves
        by_cell.setdefault(served[release][0], []).append(release)
    try:
        for cell_id, releases in by_cell.items():
            # uvicorn goes into the cell's own environment, so it is probed last: the servers
            # installed into folders of their own are pinned to the environment as built.
            releases.sort(key=lambda release: served[release][1] == "uvicorn")
            with tempfile.TemporaryDirectory(prefix="bgmatrix-probe-env-") as tmp:
                python = Path(runner.build_env(cells[cell_id], Path(tmp) / "env"))
                for release in releases:
                    server, version = served[release][1], release.split(" ", 1)[1]
                    entry = observe(python, cells[cell_id], server, version)
                    measured[release] = entry
                    complete &= entry["state"] == "ok"
                    print(f"{release} ({cell_id}): {entry['state']}"
                          + (f" ({entry['message']})" if entry["message"] else ""), flush=True)
    finally:  # an interrupted run keeps every release it finished
        if measured:
            write_text_if_changed(out, dumps(record(measured, old)))
            print(f"wrote {out} ({len(measured)} release(s) probed)")
    return 0 if complete else 1
