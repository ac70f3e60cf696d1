"""Per-cell cost of bgmatrix against the obvious alternative and against the floor.

    uv run python scripts/benchmark.py [--repeat 3]

On the same five cells, in one run:
  (a) bgmatrix: ``bgmatrix.run.runner.run_cell`` (fresh uv venv, period-correct install, suite
  tools,
      import probe, freeze, the spec suite);
  (b) the obvious alternative: a plain nox session per version with nox's default
      virtualenv+pip backend installing the pair and pytest, then running the same suite;
  (c) the floor: a fresh uv venv from a warm cache plus ``python -c "import fastapi"``.
Prints per-cell medians and the ratios b/a and a/c.  Each variant is warmed once first, so
every figure is a warm-cache figure.
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


def ours(c: dict) -> None:
    result = runner.run_cell(c)
    if result["state"] != "ok":
        raise SystemExit(f"{c['id']}: {result['state']}: {result['message']}")


def plain_nox(c: dict, work: Path) -> None:
    noxfile = work / "noxfile.py"
    noxfile.write_text(textwrap.dedent(f"""
        import nox

        @nox.session(python={str(interpreters.find(c['python']))!r})
        def cell(session):
            session.install("fastapi=={c['fastapi']}", "starlette=={c['starlette']}",
                            "pytest==8.3.5")
            suite = {str(runner.SUITE_DIR)!r}
            session.run("python", "-m", "pytest", "-q", "-c", suite + "/pytest.ini",
                        "--rootdir", suite, suite)
    """))
    shutil.rmtree(work / ".nox", ignore_errors=True)
    subprocess.run(["nox", "-f", str(noxfile), "--envdir", str(work / ".nox")], check=True,
                   capture_output=True, cwd=work)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    plan = {c["id"]: c for c in store.load_cells()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["UV_PYTHON_DOWNLOADS"] = "never"
        for cid in CELLS:
            c = plan[cid]
            variants = {
                "bgmatrix": lambda c=c: ours(c),
                "plain nox": lambda c=c: plain_nox(c, work),
                "floor": lambda c=c: floor(c, work),
            }
            for fn in variants.values():
                fn()  # warm the caches
            times = {name: [] for name in variants}
            for _ in range(args.repeat):
                for name, fn in variants.items():
                    times[name].append(timed(fn))
            med = {name: statistics.median(t) for name, t in times.items()}
            rows.append((cid, med))
            print(f"{cid:<30} bgmatrix {med['bgmatrix']:5.2f}s  plain nox "
                  f"{med['plain nox']:5.2f}s  floor {med['floor']:5.2f}s  "
                  f"speed-up {med['plain nox'] / med['bgmatrix']:4.1f}x  "
                  f"vs floor {med['bgmatrix'] / med['floor']:4.2f}x", flush=True)
    total = {k: sum(m[k] for _, m in rows) for k in ("bgmatrix", "plain nox", "floor")}
    print(f"{'all five cells':<30} bgmatrix {total['bgmatrix']:5.2f}s  plain nox "
          f"{total['plain nox']:5.2f}s  floor {total['floor']:5.2f}s  speed-up "
          f"{total['plain nox'] / total['bgmatrix']:4.1f}x  vs floor "
          f"{total['bgmatrix'] / total['floor']:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
