"""Backwards compatibility, measured: what each candidate resolution changes for existing code.

Every row of the table is an app that runs (``tests/compat/test_compat.py``): code written
against FastAPI as it is, such as the workarounds for #11215, a dependency that adds tasks, a
custom ``APIRoute`` that reads the sent response's background, a ``Response`` subclass that
keeps state, a test suite that turns warnings into errors.  Each row runs on the unpatched base
release and on every candidate patch, each in a fresh environment made exactly as a candidate
cell is (uv, Python 3.11, the base release's Starlette, every other dependency as of the
release's date), and records a short label and the raw facts.  A cell is ``changed`` when its
label differs from the base release's.

    bgmatrix compat                    the base release and every candidate
    bgmatrix compat recommended warn   the base release and some (others kept from the file)

Writes ``candidates/compat.json`` (schema/compat.schema.json) and prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bgmatrix import schemas
from bgmatrix.errors import BgmatrixError
from bgmatrix.files import write_text_atomic
from bgmatrix.run import candidates, runner
from bgmatrix.run.candidates import CandidateError  # errors of this verb: one line, exit 2
from bgmatrix.run.env import CellError, tail
from bgmatrix.run.env import run as run_child
from bgmatrix.spec import ROOT

COMPAT_DIR = ROOT / "tests" / "compat"
COMPAT_PATH = candidates.CANDIDATES_DIR / "compat.json"
COMPAT_TIMEOUT = 300  # seconds for the rows of one build; each request has its own 10 s

#: The column of the unpatched release, first in every table.
BASE = "base"

#: The rows, in table order: the id each test records, and what the row's app is.
ROWS: dict[str, str] = {
    "workaround-copy": "the injected tasks copied into the endpoint's own BackgroundTasks, "
                       "sent as the response's background",
    "workaround-wrap": "BackgroundTask(bt): the injected object as the function of the "
                       "response's background",
    "clear-escape-hatch": "bt.tasks.clear(), then a Response with its own background "
                          "(the maintainer's advice)",
    "dependency-tasks": "a dependency adds a task; the endpoint returns a Response with "
                        "its own background",
    "route-class-introspection": "a custom APIRoute reads .func, .tasks and calls .add_task "
                                 "on the sent response's background",
    "response-subclass-state": "a Response subclass sets self.sent in __call__; the app "
                               "reads it on its own reference",
    "warnings-as-errors": "warnings.simplefilter('error'): conflict, identity, "
                          "declared-unused and cleared endpoints",
}

#: Labels that say a column was not measured (the build or its environment failed).
NOT_MEASURED = "not-measured"


# -- running the rows in one build's environment -----------------------------------------------


def run_rows(build: candidates.Build, base: candidates.Base) -> tuple[dict[str, dict], dict]:
    """Make ``build``'s environment and run the rows there; return each row's record and the
    environment (python, packages).  Raises CellError when the environment or harness broke."""
    cell = candidates.candidate_cell(build, base)
    (runner.WORK_DIR / "envs").mkdir(parents=True, exist_ok=True)
    env_dir = Path(tempfile.mkdtemp(prefix=f"compat-{cell['id']}.", dir=runner.WORK_DIR / "envs"))
    try:
        python = runner.build_env(cell, env_dir,
                                  install=[str(build.wheel), f"starlette=={base.starlette}"])
        out = env_dir / "compat.jsonl"
        cmd = [str(python), "-m", "pytest", "-q", "-c", str(COMPAT_DIR / "pytest.ini"),
               "--rootdir", str(COMPAT_DIR), str(COMPAT_DIR), "--compat-out", str(out)]
        try:
            rc, output = run_child(cmd, COMPAT_TIMEOUT, runner.child_env(BGMATRIX_COMPAT="1"))
        except subprocess.TimeoutExpired:
            raise CellError("timeout", f"the rows did not finish in {COMPAT_TIMEOUT}s") from None
        lines = out.read_text(encoding="utf-8").splitlines() if out.is_file() else []
        records = parse_records(lines, rc, output)
        environment = {"packages": runner.freeze(python)}
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)
    return records, environment


def parse_records(lines: Iterable[str], rc: int, output: str) -> dict[str, dict]:
    """Each row's record from the JSON lines the tests wrote; raise CellError if the harness
    broke (a test failed, a row is missing or unknown, or pytest did not pass)."""
    records: dict[str, dict] = {}
    for line in lines:
        data = json.loads(line)
        if data["outcome"] != "observed":
            raise CellError("harness-error", f"{data['test']}: {data['error']}")
        if data["row"] not in ROWS:
            raise CellError("harness-error", f"{data['test']}: unknown row {data['row']!r}")
        records[data["row"]] = {"label": data["label"], "facts": data["facts"]}
    missing = [r for r in ROWS if r not in records]
    if rc != 0 or missing:
        said = f"missing rows {', '.join(missing)}; " if missing else ""
        raise CellError("harness-error", tail(f"{said}pytest exited {rc}: {output}"))
    return records


# -- the table -----------------------------------------------------------------------------------


def table(columns: Mapping[str, Mapping[str, dict] | str]) -> dict[str, dict]:
    """Rows × columns: each column is a build's records by row, or a string saying why it
    was not measured.  Each cell is {label, changed, facts}; ``changed`` compares the label
    with the base column's (never true for the base itself or an unmeasured cell)."""
    base = columns[BASE]
    if isinstance(base, str):
        raise CandidateError(f"the base release was not measured: {base}")
    rows: dict[str, dict] = {}
    for row, description in ROWS.items():
        cells = {}
        for name, records in columns.items():
            if isinstance(records, str):
                cells[name] = {"label": NOT_MEASURED, "changed": False,
                               "facts": {"error": records}}
                continue
            record = records[row]
            cells[name] = {"label": record["label"],
                           "changed": record["label"] != base[row]["label"],
                           "facts": record["facts"]}
        rows[row] = {"description": description, "cells": cells}
    return rows


def report(base: candidates.Base, columns: Mapping[str, Mapping[str, dict] | str],
           environments: Mapping[str, dict]) -> dict:
    """The whole record written to candidates/compat.json."""
    return {
        "about": "What each candidate resolution of FastAPI #11215 changes for existing code: "
                 "each row is an app in tests/compat/test_compat.py, run on the unpatched base "
                 "release and on every candidate patch; a cell is changed when its label "
                 "differs from the base release's. See bgmatrix/run/compat.py.",
        "base": {"fastapi": base.fastapi, "starlette": base.starlette, "python": base.python,
                 "cutoff": base.cutoff},
        "command": "bgmatrix compat",
        "columns": [BASE] + sorted(c for c in columns if c != BASE),
        "environments": {name: dict(env) for name, env in sorted(environments.items())},
        "rows": table(columns),
    }


def merge_kept(new: dict, old: Mapping[str, Any], known: Iterable[str]) -> dict:
    """Keep columns of ``old`` that this run did not measure, when the baseline is the same
    (same base release and same base labels) and the candidate still exists."""
    same = old.get("base") == new["base"] and all(
        old.get("rows", {}).get(r, {}).get("cells", {}).get(BASE, {}).get("label")
        == new["rows"][r]["cells"][BASE]["label"] for r in ROWS)
    if not same:
        return new
    keep = [c for c in old.get("columns", []) if c not in new["columns"] and c in set(known)]
    for name in keep:
        for row in ROWS:
            new["rows"][row]["cells"][name] = old["rows"][row]["cells"][name]
        if name in old.get("environments", {}):
            new["environments"][name] = old["environments"][name]
    new["columns"] = [BASE] + sorted(c for c in new["columns"] + keep if c != BASE)
    new["environments"] = dict(sorted(new["environments"].items()))
    return new


def write(data: dict, path: Path = COMPAT_PATH) -> None:
    found = schemas.problem(data, "compat")
    if found is not None:  # never commit a record the schema refuses
        raise CandidateError(f"compat record: {found}")
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
                      + "\n")


def markdown(data: Mapping[str, Any]) -> str:
    """The table as Markdown: rows × columns; the base column shows its label, every other
    cell ``unchanged`` or its label marked ⚠."""
    columns = data["columns"]
    head = ["row", f"{data['base']['fastapi']} (base)", *columns[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row, entry in data["rows"].items():
        cells = []
        for name in columns:
            cell = entry["cells"][name]
            label = cell["label"].replace("|", "\\|")
            if name == BASE or cell["label"] == NOT_MEASURED:
                cells.append(label)
            else:
                cells.append(f"{label} ⚠" if cell["changed"] else "unchanged")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="CANDIDATE",
                   help="candidate names (default: every candidates/*.patch)")
    p.add_argument("-j", "--jobs", type=int, default=3,
                   help="environments made and run at once (default: 3)")
    p.add_argument("--out", default=str(COMPAT_PATH),
                   help="where the table goes (default: candidates/compat.json)")


def builds(selected: Sequence[str], base: candidates.Base) -> dict[str, candidates.Build | str]:
    """The base release's unpatched wheel and each candidate's, or why one could not be built."""
    found: dict[str, candidates.Build | str] = {
        BASE: candidates.Build(BASE, candidates.patched_wheel(None, base, "unpatched"),
                               base.fastapi, True)}
    for name in selected:
        try:
            found[name] = candidates.Build(name, candidates.build(name), base.fastapi, True)
        except BgmatrixError as exc:
            found[name] = f"build failed: {exc}"
    return found


def command(args: argparse.Namespace) -> int:
    """``bgmatrix compat``: exit 0 when every column was measured, 1 otherwise."""
    base = candidates.base_release()
    known = candidates.names()
    for name in args.names:
        candidates.patch_path(name)  # an unknown name fails before anything slow starts
    selected = list(args.names) or known
    made = builds(selected, base)

    def measure(item: tuple[str, candidates.Build | str]) -> tuple[str, Any, dict]:
        name, build = item
        if isinstance(build, str):
            return name, build, {}
        try:
            records, environment = run_rows(build, base)
        except CellError as exc:
            return name, f"{exc.state}: {exc.message}", {}
        return name, records, environment

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        measured = list(pool.map(measure, made.items()))
    columns = {name: records for name, records, _ in measured}
    environments = {name: env for name, _, env in measured if env}
    data = report(base, columns, environments)
    out = Path(args.out)
    try:
        old = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        old = {}
    data = merge_kept(data, old, known)
    write(data, out)
    print(markdown(data))
    failed = [n for n, records, _ in measured if isinstance(records, str)]
    for name in failed:
        print(f"bgmatrix compat: {name} not measured: {str(columns[name]).splitlines()[0]}",
              file=sys.stderr)
    return 1 if failed else 0
