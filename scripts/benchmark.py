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
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

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
    args = parser.parse_args()
    plan = {c["id"]: c for c in store.load_cells()}
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


if __name__ == "__main__":
    sys.exit(main())
