"""Per-cell cost of bgmatrix against its alternatives, the floor and the limit.

    uv run python scripts/benchmark.py [--repeat 3]

On the same five cells, in one run, the variants interleaved within every repetition:
  (a) bgmatrix: ``bgmatrix.run.runner.run_cell`` as a re-run of the cell: its environment is
      taken from the environment store (bgmatrix.run.envstore), the suite runs in one
      interpreter that also records the freeze;
  (a0) bgmatrix, store off (``BGMATRIX_ENV_STORE=0``): what a cell costs the first time (fresh
      uv venv, period-correct install, suite tools, the spec suite) -- every cell of a first
      sweep;
  (b) plain nox: a nox session per version with nox's default virtualenv+pip backend
      installing the pair and pytest, then running the same suite;
  (c) nox + uv: the same session with ``venv_backend="uv"``, installing the same
      period-correct pair (uv's ``--exclude-newer`` at the cell's cutoff) — what a current nox
      user writes, and the strongest alternative;
  (d) the floor: a fresh uv venv from a warm cache plus ``python -c "import fastapi"``;
  (e) the limit: a fresh interpreter's ``import fastapi`` in a ready environment plus the
      suite's test bodies' own time (the sum of pytest's per-test ``call`` durations: no
      interpreter start-up, plugin loading or collection).
Prints per-cell medians with their spread (min–max) and the ratios b/a, c/a, a/d and a/e, then
the same for the store off: b/a0, c/a0, a0/e.
Each variant is warmed once first, so every figure is a warm-cache figure.

    uv run python scripts/benchmark.py --schedules [--repeat 3]

The schedule set's cost instead (issue 13: "run them inside the cell's one test process").
Each cell runs as (a) does -- ``run_cell``, environment from the store, warmed once -- and its
one pytest process, timed on its own, also writes a JUnit report and the time pytest's
collection took (a small plugin).  That wall time is split into parts that add up to it:
start+exit (outside pytest's session: interpreter, freeze, pytest and conftest imports; the
report and the exit), collection, the tests' own durations (setup + call + teardown) and
"between" (the rest of the session: each test's report and record).  The tests are split by
what the suite's source says they do: call ``webapp.schedules`` (the set), loop over
``vocabulary.SEND_YIELDS`` (LIFE-1, LIFE-4), or neither.  N, the number of schedules, is
counted in the run's own records.  The alternative the issue rules out -- each schedule in a
process of its own -- is *derived*, not run (the suite has no switch to select one schedule,
and adding one would change the suite's hash): the cell's time plus N - 1 more processes,
each charged the start+exit and collection measured in the same run; the test bodies are the
measured ones, counted once.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bgmatrix.plan import store  # noqa: E402
from bgmatrix.run import interpreters, runner  # noqa: E402

#: Headline cells on Python 3.9+: the current virtualenv (nox's default backend) can no longer
#: seed a Python 3.8 environment, so the alternative could not run the 3.8 cells at all.
CELLS = (
    "fa-0.117.1_st-0.48.0_py3.9",
    "fa-0.121.0_st-0.49.3_py3.9",
    "fa-0.134.0_st-1.10.0_py3.11",
    "fa-0.142.0_st-1.10.0_py3.11",
    "fa-0.165.0_st-1.10.0_py3.11",
)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours(c: dict, store: bool = True) -> None:
    os.environ["BGMATRIX_ENV_STORE"] = "1" if store else "0"
    try:
        result = runner.run_cell(c)
    finally:
        os.environ.pop("BGMATRIX_ENV_STORE", None)
    if result["state"] != "ok":
        raise SystemExit(f"{c['id']}: {result['state']}: {result['message']}")


def nox_session(c: dict, work: Path, backend: str) -> None:
    """One nox session that installs the pair and pytest and runs the suite: with nox's
    default backend (virtualenv + pip) as written, or with uv and the cell's cutoff."""
    folder = work / backend
    folder.mkdir(exist_ok=True)
    noxfile = folder / "noxfile.py"
    pins = [f"fastapi=={c['fastapi']}", f"starlette=={c['starlette']}", "pytest==8.3.5"]
    if backend == "uv":  # the same period-correct resolution bgmatrix makes
        pins = ["--exclude-newer", c["cutoff"], "--exclude-newer-package", "fastapi=false",
                "--exclude-newer-package", "starlette=false",
                "--exclude-newer-package", "pytest=false", *pins]
    noxfile.write_text(textwrap.dedent(f"""
        import nox

        @nox.session(python={str(interpreters.find(c['python']))!r},
                     venv_backend={backend if backend == "uv" else "virtualenv"!r})
        def cell(session):
            session.install(*{pins!r})
            suite = {str(runner.SUITE_DIR)!r}
            session.run("python", "-m", "pytest", "-q", "-c", suite + "/pytest.ini",
                        "--rootdir", suite, suite)
    """))
    shutil.rmtree(folder / ".nox", ignore_errors=True)
    subprocess.run(["nox", "-f", str(noxfile), "--envdir", str(folder / ".nox")], check=True,
                   capture_output=True, cwd=folder)


def limit(c: dict, work: Path) -> float:
    """Seconds of the irreducible part: ``import fastapi`` in a fresh interpreter, plus the
    sum of the suite's per-test call durations, both in a ready environment."""
    env_dir = work / "limit" / c["id"]  # built once per cell, outside the timed part
    python = env_dir / "env" / "bin" / "python"
    if not python.exists():
        runner.build_env(c, env_dir / "env")
    start = time.perf_counter()
    subprocess.run([str(python), "-c", "import fastapi"], check=True)
    imported = time.perf_counter() - start
    suite = runner.SUITE_DIR
    proc = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-c", str(suite / "pytest.ini"), "--rootdir",
         str(suite), str(suite), "--durations=0", "--durations-min=0", "-p", "no:cacheprovider",
         "--bgmatrix-out", str(env_dir / "records.jsonl")],
        capture_output=True, text=True, env=runner.child_env(BGMATRIX_KIND=c["kind"]))
    calls = [float(line.split("s", 1)[0]) for line in proc.stdout.splitlines()
             if " call " in line and line[:1].isdigit()]
    if not calls:
        raise SystemExit(f"{c['id']}: no per-test durations in pytest's output")
    return imported + sum(calls)


def floor(c: dict, work: Path) -> None:
    env_dir = work / "floor"
    shutil.rmtree(env_dir, ignore_errors=True)
    env = runner.uv_env()
    subprocess.run(["uv", "venv", "-q", "-p", str(interpreters.find(c["python"])), str(env_dir)],
                   check=True, env=env)
    subprocess.run(["uv", "pip", "install", "-q", "--python", str(env_dir / "bin/python"),
                    "--exclude-newer", c["cutoff"], "--exclude-newer-package", "fastapi=false",
                    "--exclude-newer-package", "starlette=false", *runner.requirements(c)],
                   check=True, env=env)
    subprocess.run([str(env_dir / "bin/python"), "-c", "import fastapi"], check=True)


VARIANTS = ("bgmatrix", "plain nox", "nox+uv", "floor", "limit", "store off")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--schedules", action="store_true",
                        help="measure the schedule set's share of a cell instead (issue 13)")
    args = parser.parse_args()
    plan = {c["id"]: c for c in store.load_cells()}
    if args.schedules:
        return schedules_main(plan, args.repeat)
    rows = []
    print("cell".ljust(30) + "".join(f"{v:>18}" for v in VARIANTS)
          + "   b/a   c/a   a/d   a/e  b/a0  c/a0  a0/e   (median, min-max of the repeats)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["UV_PYTHON_DOWNLOADS"] = "never"
        for cid in CELLS:
            c = plan[cid]
            variants = {
                "bgmatrix": lambda c=c: timed(lambda: ours(c)),
                "plain nox": lambda c=c: timed(lambda: nox_session(c, work, "virtualenv")),
                "nox+uv": lambda c=c: timed(lambda: nox_session(c, work, "uv")),
                "floor": lambda c=c: timed(lambda: floor(c, work)),
                "limit": lambda c=c: limit(c, work),
                "store off": lambda c=c: timed(lambda: ours(c, store=False)),
            }
            for fn in variants.values():
                fn()  # warm the caches
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeat):
                for name, fn in variants.items():
                    times[name].append(fn())
            med = {name: statistics.median(t) for name, t in times.items()}
            rows.append((cid, med))
            cells = "".join(f"{med[v]:6.2f}s {min(times[v]):4.2f}-{max(times[v]):4.2f}"
                            for v in VARIANTS)
            print(f"{cid:<30}{cells}  {ratios(med)}", flush=True)
    total = {v: sum(m[v] for _, m in rows) for v in VARIANTS}
    print(f"{'all five cells':<30}" + "".join(f"{total[v]:17.2f}s" for v in VARIANTS)
          + f"  {ratios(total)}")
    return 0


def ratios(t: dict[str, float]) -> str:
    """b/a and c/a: how many times slower each alternative is; a/d and a/e: how far bgmatrix
    is from the floor and from the limit; a0: the same for bgmatrix with its store off."""
    return (f"{t['plain nox'] / t['bgmatrix']:5.2f} {t['nox+uv'] / t['bgmatrix']:5.2f} "
            f"{t['bgmatrix'] / t['floor']:5.2f} {t['bgmatrix'] / t['limit']:5.2f} "
            f"{t['plain nox'] / t['store off']:5.2f} {t['nox+uv'] / t['store off']:5.2f} "
            f"{t['store off'] / t['limit']:5.2f}")


# -- the schedule set's cost (issue 13) --------------------------------------------------------

#: What a spec test does with the schedule set, as its source says (see schedule_tests).
SET, SEND_YIELDS, OTHER = "set", "send-yields", "other"


def schedule_tests(suite_dir: Path = runner.SUITE_DIR) -> dict[tuple[str, str], str]:
    """The spec tests that loop over the schedule set, read from the suite's source:
    ``{(module, test function): SET or SEND_YIELDS}``.  SET: the test calls
    ``webapp.schedules``; SEND_YIELDS: it loops over ``vocabulary.SEND_YIELDS`` (the set's
    server side only).  A call to a function of the same module counts as the test's own."""
    found: dict[tuple[str, str], str] = {}
    for path in sorted(suite_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {node.name: node for node in tree.body
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}

        for name in functions:
            if name.startswith("test_"):
                kinds = _schedule_use(functions, name, set())
                if kinds:
                    found[(path.stem, name)] = SET if SET in kinds else SEND_YIELDS
    return found


def _schedule_use(functions: dict, name: str, seen: set[str]) -> set[str]:
    """What ``functions[name]``, and the module's functions it calls, do with the set."""
    seen.add(name)
    kinds = set()
    for node in ast.walk(functions[name]):
        if isinstance(node, ast.Call) and _dotted(node.func) == "webapp.schedules":
            kinds.add(SET)
        elif isinstance(node, ast.For) and _dotted(node.iter) == "vocabulary.SEND_YIELDS":
            kinds.add(SEND_YIELDS)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in functions and node.func.id not in seen):
            kinds |= _schedule_use(functions, node.func.id, seen)
    return kinds


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return ""


def test_of(nodeid_or_classname: str, name: str = "") -> tuple[str, str]:
    """``(module, test function)`` of a pytest node id (``test_mw.py::test_x[case]``) or of a
    JUnit test case (classname ``test_mw``, name ``test_x[case]``)."""
    if not name:
        nodeid_or_classname, name = nodeid_or_classname.split("::", 1)
    module = nodeid_or_classname.split("/")[-1].removesuffix(".py").split(".")[0]
    return module, name.split("[", 1)[0]


def junit_times(text: str) -> tuple[float, list[tuple[tuple[str, str], float]]]:
    """The session's seconds and each test case's (setup + call + teardown) from pytest's
    JUnit XML: ``(session, [((module, function), seconds), ...])``."""
    root = ET.fromstring(text)
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        raise ValueError("no <testsuite> in the JUnit report")
    cases = [(test_of(case.get("classname", ""), case.get("name", "")),
              float(case.get("time", "0"))) for case in suite.iter("testcase")]
    return float(suite.get("time", "0")), cases


def schedule_split(process: float, collection: float, junit: str,
                   classified: dict[tuple[str, str], str]) -> dict[str, float]:
    """One pytest process's wall time in parts that add up to it: "start+exit" (outside
    pytest's session: the interpreter, the freeze, pytest and the suite's conftest; the report
    written and the exit), "collection" (measured inside the process), the tests by what they
    do with the schedule set (SET, SEND_YIELDS, OTHER; each test's setup + call + teardown)
    and "between" (the rest of the session: each test's report and record, the session's
    end)."""
    session, cases = junit_times(junit)
    parts = {"start+exit": process - session, "collection": collection,
             SET: 0.0, SEND_YIELDS: 0.0, OTHER: 0.0}
    for test, seconds in cases:
        parts[classified.get(test, OTHER)] += seconds
    parts["between"] = session - collection - parts[SET] - parts[SEND_YIELDS] - parts[OTHER]
    return parts


def schedule_counts(records: list[dict], classified: dict[tuple[str, str], str]
                    ) -> dict[str, int]:
    """N per kind: the most schedules one test of that kind observed (its ``schedules``
    observation has one entry per schedule run).  A test that observed schedules but that
    the source reading missed is an error: the split would be wrong."""
    counts = {SET: 0, SEND_YIELDS: 0}
    for rec in records:
        ran = rec.get("observations", {}).get("schedules")
        if not ran:
            continue
        kind = classified.get(test_of(rec["test"]))
        if kind is None:
            raise ValueError(f"{rec['test']} observed schedules, but its source calls neither "
                             "webapp.schedules nor loops over vocabulary.SEND_YIELDS")
        counts[kind] = max(counts[kind], len(ran))
    return counts


def one_process_instead(cell: float, overhead: float, n: int) -> float:
    """The cell's seconds with each of its N schedules in a process of its own (derived, not
    run): N - 1 more processes, each paying ``overhead`` (start+exit + collection); the test
    bodies and the rest of the cell as before."""
    return cell + (n - 1) * overhead


#: A pytest plugin the benchmark adds to the cell's run (``-p``): it writes how long pytest's
#: collection took to the file named by BGMATRIX_BENCH_COLLECTION.  Python 3.8 compatible.
COLLECTION_CLOCK = """\
import os, time
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        with open(os.environ["BGMATRIX_BENCH_COLLECTION"], "w") as fh:
            fh.write(repr(time.perf_counter() - start))
"""


def schedule_run(c: dict, work: Path, classified: dict[tuple[str, str], str]) -> dict:
    """One run of the cell exactly as (a) runs it (``run_cell``), its pytest process timed on
    its own and given two additions: ``--junitxml`` (the session's and each test's durations)
    and the COLLECTION_CLOCK plugin.  Returns the split, N per kind and the cell's seconds."""
    report, clock = work / f"{c['id']}.junit.xml", work / "clock"
    clock.mkdir(exist_ok=True)
    (clock / "bgmatrix_bench_clock.py").write_text(COLLECTION_CLOCK)
    collection = work / f"{c['id']}.collection"
    for stale in (report, collection):
        stale.unlink(missing_ok=True)
    seen: dict = {}
    command, run, run_suite = runner.suite_command, runner._run, runner.run_suite

    def with_report(*args):
        return [*command(*args), "--junitxml", str(report), "-p", "bgmatrix_bench_clock"]

    def timed_run(cmd, timeout, env=None):
        if "--junitxml" not in cmd:
            return run(cmd, timeout, env)
        env = {**(env or {}), "PYTHONPATH": str(clock),
               "BGMATRIX_BENCH_COLLECTION": str(collection)}
        start = time.perf_counter()
        try:
            return run(cmd, timeout, env)
        finally:
            seen["process"] = time.perf_counter() - start

    def keep_records(*args):
        rc, records, session = run_suite(*args)
        seen["records"] = records
        return rc, records, session

    with mock.patch.object(runner, "suite_command", with_report), \
            mock.patch.object(runner, "_run", timed_run), \
            mock.patch.object(runner, "run_suite", keep_records):
        cell = timed(lambda: ours(c))
    parts = schedule_split(seen["process"], float(collection.read_text()),
                           report.read_text(encoding="utf-8"), classified)
    return {"cell": cell, "process": seen["process"], **parts,
            "n": schedule_counts(seen["records"], classified)}


SCHEDULE_COLUMNS = ("cell", "process", "start+exit", "collection", "between", SET, SEND_YIELDS,
                    OTHER)


def schedules_main(plan: dict, repeat: int) -> int:
    classified = schedule_tests()
    print(f"tests under the schedule set (read from {runner.SUITE_DIR.relative_to(ROOT)}):")
    for kind in (SET, SEND_YIELDS):
        names = sorted(f"{m}.{f}" for (m, f), k in classified.items() if k == kind)
        print(f"  {kind}: {', '.join(names)}")
    print("\nseconds, median of the repeats; process: the cell's one pytest process = start+exit"
          " + collection + between + set + send-yields + other")
    print("cell".ljust(30) + "".join(f"{col:>12}" for col in SCHEDULE_COLUMNS)
          + "  share    N  N-process  ratio")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["UV_PYTHON_DOWNLOADS"] = "never"
        for cid in CELLS:
            c = plan[cid]
            schedule_run(c, work, classified)  # warm: fills the store, compiles bytecode
            runs = [schedule_run(c, work, classified) for _ in range(repeat)]
            counts = {(r["n"][SET], r["n"][SEND_YIELDS]) for r in runs}
            if len(counts) != 1:
                raise SystemExit(f"{cid}: the repeats ran different schedule counts: {counts}")
            n_set, n_send = counts.pop()
            med = {col: statistics.median(r[col] for r in runs) for col in SCHEDULE_COLUMNS}
            med["alternative"] = statistics.median(
                one_process_instead(r["cell"], r["start+exit"] + r["collection"], max(n_set, 1))
                for r in runs)
            rows.append(med)
            print(f"{cid:<30}" + "".join(f"{med[col]:11.2f}s" for col in SCHEDULE_COLUMNS)
                  + f"  {schedule_share(med):5.1%}  {n_set}/{n_send}  {med['alternative']:8.2f}s"
                  f"  {med['alternative'] / med['cell']:5.2f}", flush=True)
    total = {col: sum(m[col] for m in rows) for col in (*SCHEDULE_COLUMNS, "alternative")}
    print(f"{'all five cells':<30}" + "".join(f"{total[col]:11.2f}s" for col in SCHEDULE_COLUMNS)
          + f"  {schedule_share(total):5.1%}       {total['alternative']:8.2f}s"
          f"  {total['alternative'] / total['cell']:5.2f}")
    print("\nshare: the tests under the schedule set (set + send-yields) as a share of the cell."
          "\nN: schedules per test, set/send-yields, counted in the run's records."
          "\nN-process: DERIVED, not run -- each schedule in a process of its own: the cell plus"
          " N-1 processes,\n  each charged the start+exit + collection measured in the same run"
          " (the suite has no switch to\n  select one schedule); the test bodies are the measured"
          " ones, counted once. ratio: N-process / cell.")
    return 0


def schedule_share(t: dict[str, float]) -> float:
    return (t[SET] + t[SEND_YIELDS]) / t["cell"]


if __name__ == "__main__":
    sys.exit(main())
