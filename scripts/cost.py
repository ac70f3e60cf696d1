"""Per-request cost of each candidate patch against unpatched FastAPI (issue 12, item 6).

    uv run --quiet --frozen --extra site --extra test python scripts/cost.py [--rounds 301]

Three paths, each an ``async def`` endpoint that injects ``BackgroundTasks`` and adds one
no-op ``async`` task, so that what is timed is the framework's own work per request:

  data      returns a dict (FastAPI serializes it and attaches the injected tasks);
  response  returns ``Response(b"ok")`` without a background of its own;
  conflict  returns ``Response(b"ok", background=BackgroundTask(noop))`` (issue #11215).

Everything runs in one Python 3.11 process, one event loop, in a uv environment with the
base release and its Starlette (``bgmatrix.run.candidates.base_release``), built once under
``.bgmatrix/cost/``.  Every variant is the source distribution's own ``fastapi/routing.py``,
patched (a candidate) or not (``unpatched``, and ``unpatched-again``, a second copy: the A/A
control that shows how far the method sees a difference where there is none), loaded as a
module of its own; each variant gets one FastAPI app whose routes are that module's
``APIRoute``.  Requests are plain ASGI calls (a minimal scope, ``receive`` and ``send``; no
network, no test client); the response's background tasks run inside the call, as in a server.

Before timing, one request per variant and path checks that the variant's handler runs: the
route classes are the module's own, every status is 200, and the tasks that ran (and any
warning) are recorded; base, control and the known candidates must behave as their headers
say.  Then, in every round, path by path (in a shuffled order), every variant (in a shuffled
order) times one batch of requests on this thread's CPU clock.  Reported per pair: the median
per-request time over the rounds with its interquartile range; per candidate and path: the
ratio to ``unpatched`` *in the same round*, its median over the rounds, interquartile range,
min-max and a 95 % confidence interval of the median (order statistics).  On the conflict path
a merging candidate also runs the injected task that ``unpatched`` drops: that task is part of
its cost.  Writes ``candidates/cost.json`` (schema/cost.schema.json).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "uv run --quiet --frozen --extra site --extra test python scripts/cost.py"
OUTPUT = ROOT / "candidates" / "cost.json"

BASE = "unpatched"
CONTROL = "unpatched-again"
PATHS = {
    "data": "returns a dict; BackgroundTasks injected, one no-op task added",
    "response": "returns Response(b'ok') without a background; BackgroundTasks injected, "
                "one no-op task added",
    "conflict": "returns Response(b'ok', background=BackgroundTask(noop)); BackgroundTasks "
                "injected, one no-op task added",
}
#: The candidate the target is about, and the target: its overhead on every path.
TARGET_CANDIDATE = "recommended"
TARGET_PERCENT = 3.0

#: Per path: the tasks that ran, in order, whether a UserWarning was emitted and whether a
#: warning was logged, as each known variant's patch header describes it.  A candidate not
#: listed here is measured and its behaviour recorded, without an expectation.
EXPECTED: Dict[str, Dict[str, Any]] = {
    name: {"data": (["injected"], False, False), "response": (["injected"], False, False),
           "conflict": conflict}
    for name, conflict in {
        BASE: (["own"], False, False),
        CONTROL: (["own"], False, False),
        "copy-on-send": (["own"], False, False),
        "merge-fastapi-tasks": (["injected", "own"], False, False),
        "merge-injected-first-in-place": (["injected", "own"], False, False),
        "merge-response-first": (["own", "injected"], False, False),
        "pr-15357": (["injected", "own"], False, False),
        "recommended": (["injected", "own"], False, False),
        "recommended-in-place": (["injected", "own"], False, False),
        "warn": (["own"], True, False),
        "warn-on-loss": (["own"], True, True),
    }.items()
}


# -- the pure part: statistics -----------------------------------------------------------------


def quartiles(values: Sequence[float]) -> Dict[str, float]:
    """Median, first and third quartile (inclusive method), min and max of ``values``."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        v = float(values[0])
        return {"median": v, "p25": v, "p75": v, "min": v, "max": v}
    p25, median, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": median, "p25": p25, "p75": p75,
            "min": float(min(values)), "max": float(max(values))}


def median_ci(values: Sequence[float], z: float = 1.96) -> List[float]:
    """A distribution-free confidence interval of the median: the order statistics of the
    1-based ranks ``(n+1)/2 -+ z*sqrt(n)/2``, rounded outwards and clamped to the sample
    (the normal approximation to the binomial); 95 % for the default ``z``."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    lo = max(1, math.floor((n + 1) / 2 - half))
    hi = min(n, math.ceil((n + 1) / 2 + half))
    return [float(ordered[lo - 1]), float(ordered[hi - 1])]


def paired_ratios(variant: Sequence[float], base: Sequence[float]) -> List[float]:
    """Round by round: the variant's time over the base's time measured in the same round."""
    if len(variant) != len(base):
        raise ValueError("the variant and the base were not timed in the same rounds")
    return [v / b for v, b in zip(variant, base)]


def summarize(times: Dict[str, Dict[str, List[float]]], base: str = BASE) -> Dict[str, Any]:
    """``times[variant][path]``: per-request seconds, one per round.  Per variant and path:
    the per-request time in microseconds (median and spread over the rounds) and, for every
    variant but the base, its paired ratio to the base (median, spread, 95 % CI of the
    median) and the overhead in percent that the median ratio means."""
    out: Dict[str, Any] = {}
    for variant, paths in times.items():
        out[variant] = {}
        for path, seconds in paths.items():
            entry: Dict[str, Any] = {
                "per_request_us": _rounded(quartiles([s * 1e6 for s in seconds]), 2)}
            if variant != base:
                ratios = paired_ratios(seconds, times[base][path])
                ratio = _rounded(quartiles(ratios), 4)
                ratio["ci95"] = [round(x, 4) for x in median_ci(ratios)]
                entry["ratio"] = ratio
                entry["overhead_percent"] = percent(quartiles(ratios)["median"])
            out[variant][path] = entry
    return out


def percent(ratio: float) -> float:
    """A ratio as a change in percent, to 0.1 (never -0.0)."""
    return round((ratio - 1) * 100, 1) + 0.0


def _rounded(d: Dict[str, float], digits: int) -> Dict[str, Any]:
    return {k: round(v, digits) for k, v in d.items()}


def worst(paths: Dict[str, Any]) -> Dict[str, Any]:
    """The path with the largest median overhead, and the largest upper CI bound."""
    path = max(sorted(paths), key=lambda p: paths[p]["ratio"]["median"])
    upper = max(paths[p]["ratio"]["ci95"][1] for p in paths)
    return {"path": path, "overhead_percent": paths[path]["overhead_percent"],
            "ci95_upper_percent": percent(upper)}


def table(summary: Dict[str, Any], order: Sequence[str]) -> str:
    """One line per variant: per path the median µs, the ratio and its IQR and 95 % CI."""
    head = f"{'variant':<32}" + "".join(f"{p:>44}" for p in PATHS)
    sub = f"{'':<32}" + "".join(f"{'us/req  ratio [IQR]  (95% CI)':>44}" for _ in PATHS)
    lines = [head, sub]
    for variant in order:
        cells = []
        for path in PATHS:
            e = summary[variant][path]
            us = f"{e['per_request_us']['median']:7.1f}"
            if "ratio" in e:
                r = e["ratio"]
                cells.append(f"{us}  {r['median']:.3f} [{r['p25']:.3f}-{r['p75']:.3f}] "
                             f"({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})")
            else:
                cells.append(f"{us}  (base)")
        lines.append(f"{variant:<32}" + "".join(f"{c:>44}" for c in cells))
    return "\n".join(lines)


def check_behaviour(observed: Dict[str, Dict[str, Any]]) -> List[str]:
    """Every disagreement between what a variant did before timing and what is expected of it
    (EXPECTED; variants not listed there are only recorded)."""
    problems = []
    for variant, paths in sorted(observed.items()):
        for path, seen in sorted(paths.items()):
            if seen["status"] != 200:
                problems.append(f"{variant} {path}: status {seen['status']}")
            if not seen["own_route_class"]:
                problems.append(f"{variant} {path}: the route is not the variant's APIRoute")
            want = EXPECTED.get(variant, {}).get(path)
            got = (seen["ran"], seen["warned"], seen["logged"])
            if want is not None and got != (list(want[0]), want[1], want[2]):
                problems.append(f"{variant} {path}: ran {got[0]}, warned {got[1]}, logged "
                                f"{got[2]}; expected ran {want[0]}, warned {want[1]}, "
                                f"logged {want[2]}")
    return problems


# -- the measurement, inside the benchmark environment -----------------------------------------

EVENTS: Optional[List[str]] = None  # set while checking behaviour; None while timing


async def injected() -> None:
    if EVENTS is not None:
        EVENTS.append("injected")


async def own() -> None:
    if EVENTS is not None:
        EVENTS.append("own")


def load_routing(name: str, path: Path) -> Any:
    """``path`` (a copy of fastapi/routing.py) as a module of its own; it imports ``fastapi.*``
    from the environment like the real one."""
    mod_name = "fastapi_routing_" + "".join(c if c.isalnum() else "_" for c in name)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and typing look the module up by name
    spec.loader.exec_module(module)
    return module


def make_app(routing: Any) -> Any:
    # Imported by name: fastapi is in the benchmark environment, not in the project's.
    fastapi = importlib.import_module("fastapi")
    BackgroundTasks, FastAPI = fastapi.BackgroundTasks, fastapi.FastAPI
    BackgroundTask = importlib.import_module("starlette.background").BackgroundTask
    Response = importlib.import_module("starlette.responses").Response

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.router.route_class = routing.APIRoute

    async def data(tasks):
        tasks.add_task(injected)
        return {"ok": True}

    async def response(tasks):
        tasks.add_task(injected)
        return Response(b"ok")

    async def conflict(tasks):
        tasks.add_task(injected)
        return Response(b"ok", background=BackgroundTask(own))

    for endpoint in (data, response, conflict):
        # Set here, not written in the signature: this file's annotations are strings that
        # FastAPI would resolve in the module's globals, where fastapi is not imported.
        # No return annotation, so no response model is inferred.
        endpoint.__annotations__ = {"tasks": BackgroundTasks}
        app.get("/" + endpoint.__name__)(endpoint)
    return app


def scope_for(path: str) -> Dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 50000),
            "server": ("bench", 80)}


async def receive() -> Dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Dict[str, Any]) -> None:
    return None


class Discard:
    """A stream that drops what is written: log records are still formatted, as by a
    configured production handler, but nothing reaches the terminal."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def check(app: Any, routing: Any, path: str) -> Dict[str, Any]:
    global EVENTS
    statuses: List[int] = []
    logged = Records()

    async def record(message: Dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    EVENTS = []
    logging.getLogger().addHandler(logged)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await app(scope_for(path), receive, record)
    finally:
        logging.getLogger().removeHandler(logged)
    ran, EVENTS = EVENTS, None
    routes = [r for r in app.router.routes if getattr(r, "path", None) == path]
    return {"status": statuses[0] if statuses else None, "ran": ran,
            "warned": any(issubclass(w.category, UserWarning) for w in caught),
            "logged": bool(logged.records),
            "own_route_class": len(routes) == 1 and type(routes[0]) is routing.APIRoute}


#: The clocks a batch can be timed with.  "cpu", the default, is the CPU time of this thread:
#: on a machine shared with other work the time the process waits for a core is left out
#: (everything here runs in the one thread: async endpoints, async tasks, no thread pool);
#: "wall" is elapsed time, which counts it.
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


async def batch(app: Any, scope: Dict[str, Any], n: int, clock: Any = time.thread_time) -> float:
    start = clock()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return clock() - start


async def measure(config: Dict[str, Any]) -> Dict[str, Any]:
    variants = config["variants"]  # name -> path of its routing.py
    modules = {name: load_routing(name, Path(p)) for name, p in variants.items()}
    apps = {name: make_app(mod) for name, mod in modules.items()}
    observed = {name: {path: await check(apps[name], modules[name], "/" + path)
                       for path in PATHS} for name in variants}
    problems = check_behaviour(observed)
    if problems:
        return {"observed": observed, "problems": problems}
    # The warn candidates warn on every conflict request: ignored, as a filter would.  One
    # of them also logs each time: formatted and dropped, as by a production handler.
    warnings.simplefilter("ignore")
    sink = logging.StreamHandler(Discard())
    sink.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    logging.getLogger().addHandler(sink)
    names = list(variants)
    paths = list(PATHS)
    scopes = {path: scope_for("/" + path) for path in PATHS}
    n = config["batch"]
    clock = CLOCKS[config["clock"]]
    for _ in range(config["warmup"]):
        for name in names:
            for path in paths:
                await batch(apps[name], scopes[path], n)
    gc.collect()
    gc.freeze()  # the set-up's objects stay out of the collections the requests trigger
    rng = random.Random(config["seed"])
    times: Dict[str, Dict[str, List[float]]] = {name: {p: [] for p in PATHS} for name in variants}
    started = time.perf_counter()
    for r in range(config["rounds"]):
        # Path by path, every variant once in a new order: a variant's batch and the base's
        # batch it is divided by are close in time, whatever else the machine is doing.
        rng.shuffle(paths)
        for path in paths:
            rng.shuffle(names)
            for name in names:
                times[name][path].append(await batch(apps[name], scopes[path], n, clock) / n)
        if (r + 1) % 50 == 0:
            print(f"  round {r + 1}/{config['rounds']} "
                  f"({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
    return {"observed": observed, "problems": [], "times": times,
            "python": platform.python_version(),
            "implementation": platform.python_implementation()}


def inner(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(measure(config))))
    return 0


# -- the driver, in the project's environment --------------------------------------------------


def sdist_routing(archive: Path) -> bytes:
    """``fastapi/routing.py`` of a FastAPI source distribution."""
    with tarfile.open(archive) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("/fastapi/routing.py")
                      and m.name.count("/") == 2)
        extracted = tf.extractfile(member)
        if extracted is None:
            raise RuntimeError(f"{archive}: fastapi/routing.py is not a file")
        return extracted.read()


def routing_file(source: bytes, tree: Path, patch: Optional[Path]) -> Path:
    """``tree/fastapi/routing.py`` (the folder replaced): ``source``, with ``patch`` applied
    when given (the candidates change that one file only)."""
    from bgmatrix.run import candidates

    shutil.rmtree(tree, ignore_errors=True)
    (tree / "fastapi").mkdir(parents=True)
    (tree / "fastapi" / "routing.py").write_bytes(source)
    if patch is not None:
        candidates.apply_patch(tree, patch)
    return tree / "fastapi" / "routing.py"


def routing_files(base: Any, work: Path) -> Dict[str, Path]:
    """The sdist's fastapi/routing.py for base and control, and a patched copy per candidate
    (every candidates/*.patch at this moment), each in a folder of its own under ``work``."""
    from bgmatrix.run import candidates

    source = sdist_routing(candidates.sdist(base.fastapi))
    return {name: routing_file(source, work / "modules" / name,
                               None if name in (BASE, CONTROL) else candidates.patch_path(name))
            for name in [BASE, CONTROL, *candidates.names()]}


def environment(base: Any, work: Path) -> Path:
    """A uv environment with the base release and its Starlette, every other package as of
    the release's cutoff; reused while those inputs are the same."""
    from bgmatrix.run import runner

    cell = {"python": base.python, "fastapi": base.fastapi, "starlette": base.starlette,
            "cutoff": base.cutoff}
    env_dir = work / "env"
    marker = env_dir / "bgmatrix-cost.json"
    python = env_dir / "bin" / "python"
    if python.exists() and marker.is_file() and json.loads(marker.read_text()) == cell:
        return python
    print(f"building the benchmark environment in {env_dir}", file=sys.stderr, flush=True)
    python = runner.build_env(cell, env_dir)
    marker.write_text(json.dumps(cell, sort_keys=True))
    return python


def cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def record(base: Any, config: Dict[str, Any], result: Dict[str, Any],
           packages: Dict[str, str], patches: Dict[str, str]) -> Dict[str, Any]:
    summary = summarize(result["times"])
    names = sorted(patches)
    per_candidate = {}
    for name in names:
        paths = summary[name]
        per_candidate[name] = {"patch_sha256": patches[name], "paths": paths,
                               "worst": worst(paths), "behaviour": result["observed"][name]}
    target_entry = per_candidate.get(TARGET_CANDIDATE)
    return {
        "about": "Per-request overhead of each candidate patch against unpatched FastAPI, on "
                 "three paths, measured in one process with interleaved rounds; see "
                 "scripts/cost.py and candidates/README.md",
        "command": COMMAND,
        "base": {"fastapi": base.fastapi, "starlette": base.starlette, "python": base.python,
                 "cutoff": base.cutoff},
        "method": {
            "rounds": config["rounds"], "batch": config["batch"], "clock": config["clock"],
            "warmup_batches": config["warmup"], "seed": config["seed"],
            "paths": PATHS,
            "ratio": "per round, the variant's batch time over unpatched's batch time in the "
                     "same round (each round times the paths one after the other, all "
                     "variants of a path in a shuffled order); median over the rounds, with "
                     "quartiles, min-max and a 95 % confidence interval of the median (order "
                     "statistics); overhead_percent is (median ratio - 1) x 100. On conflict, "
                     "a merging candidate also runs the injected task that unpatched drops",
            "per_request_us": "a batch's time on the clock divided by its requests, in "
                              "microseconds; median over the rounds with quartiles and min-max",
            "tasks": "one no-op async task injected per request (and, on conflict, the "
                     "response's own no-op BackgroundTask); async endpoints; raw ASGI calls",
            "warnings": "while timing, warnings are ignored (a filter) and log records are "
                        "formatted by a root handler and dropped, with no terminal output",
        },
        "host": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
                 "machine": platform.machine(), "system": platform.system(),
                 "python": result["python"], "implementation": result["implementation"]},
        "environment": {"packages": packages},
        "unpatched": summary[BASE],
        "control": {"name": CONTROL, "paths": summary[CONTROL],
                    "behaviour": result["observed"][CONTROL]},
        "unpatched_behaviour": result["observed"][BASE],
        "candidates": per_candidate,
        "target": {
            "candidate": TARGET_CANDIDATE, "max_overhead_percent": TARGET_PERCENT,
            "met": (None if target_entry is None
                    else target_entry["worst"]["overhead_percent"] <= TARGET_PERCENT),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=301, help="interleaved rounds (default 301)")
    parser.add_argument("--batch", type=int, default=40,
                        help="requests per timed batch (default 40)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per pair first")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: this thread's CPU time (default); wall: elapsed time")
    parser.add_argument("--seed", type=int, default=11215, help="the shuffle's seed")
    parser.add_argument("--output", default=str(OUTPUT), help="default: candidates/cost.json")
    parser.add_argument("--inner", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(args.inner)

    sys.path.insert(0, str(ROOT))
    from bgmatrix import files, schemas
    from bgmatrix.run import candidates, runner

    base = candidates.base_release()
    work = runner.WORK_DIR / "cost"
    work.mkdir(parents=True, exist_ok=True)
    python = environment(base, work)
    modules = routing_files(base, work)
    patches = {name: hashlib.sha256(candidates.patch_path(name).read_bytes()).hexdigest()
               for name in modules if name not in (BASE, CONTROL)}
    config = {"variants": {k: str(v) for k, v in modules.items()}, "rounds": args.rounds,
              "clock": args.clock, "batch": args.batch, "warmup": args.warmup, "seed": args.seed}
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config, indent=1))
    print(f"{len(modules)} variants x {len(PATHS)} paths, {args.rounds} rounds of "
          f"{args.batch} requests each", file=sys.stderr, flush=True)
    proc = subprocess.run([str(python), str(Path(__file__).resolve()),
                           "--inner", str(config_path)], stdout=subprocess.PIPE, text=True,
                          env=runner.child_env())
    if proc.returncode:
        print(f"the measurement failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    result = json.loads(proc.stdout)
    if result["problems"]:
        print("a variant does not behave as expected; nothing timed, nothing written:",
              file=sys.stderr)
        for line in result["problems"]:
            print(f"  {line}", file=sys.stderr)
        return 1
    packages = runner.freeze(python)
    report = record(base, config, result, packages, patches)
    found = schemas.problem(report, "cost")
    if found is not None:
        print(f"cost record: {found}", file=sys.stderr)
        return 1
    out = Path(args.output)
    files.write_text_atomic(out, json.dumps(report, indent=1, sort_keys=True) + "\n")
    summary = {BASE: report["unpatched"], CONTROL: report["control"]["paths"],
               **{n: c["paths"] for n, c in report["candidates"].items()}}
    print(f"FastAPI {base.fastapi} + Starlette {base.starlette}, Python {result['python']}, "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.batch} requests per pair, "
          f"{args.clock} clock; ratio to unpatched, same round")
    print(table(summary, [BASE, CONTROL, *sorted(patches)]))
    for name in sorted(patches):
        w = report["candidates"][name]["worst"]
        print(f"  {name:<32} worst path {w['path']}: {w['overhead_percent']:+.1f} % "
              f"(95 % CI upper bound {w['ci95_upper_percent']:+.1f} %)")
    t = report["target"]
    print(f"target: {t['candidate']} <= {t['max_overhead_percent']} % on every path: "
          f"{'met' if t['met'] else 'not met' if t['met'] is not None else 'no such candidate'}")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
