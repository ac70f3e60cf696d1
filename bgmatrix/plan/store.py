"""The plan store: the one reader and writer of matrix/plan.json, and cell selection.

Standard library only: noxfile.py imports this module inside nox's own environment, which has
none of bgmatrix's dependencies, and ``nox -l`` must stay fast and offline. The file's shape is
described by schema/plan.schema.json (a test validates the committed plan against it); the
checks here are the stdlib subset of it that every reader needs, each failing with one line
naming the file and the problem.

    load_plan(path)   the whole plan, checked          PlanFileError if missing/corrupt/other
    load_cells(path)  its cells                        schema
    write_plan(plan)  atomic write; False when the bytes would not change
    select(cells, …)  the cells named by id, ``fastapi==X``/``starlette==X``, or tags
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Optional, TypedDict

from bgmatrix import files
from bgmatrix.errors import PlanError, PlanFileError, UsageError

__all__ = ["PLAN_PATH", "SCHEMA", "PlanError", "PlanFileError", "cell_id", "load_cells",
           "load_plan", "plan_problem", "render", "select", "version_key", "write_plan"]

PLAN_PATH = Path(__file__).resolve().parents[2] / "matrix" / "plan.json"
SCHEMA = 1
PLAN_SCHEMA = SCHEMA  # the name noxfile-era callers know
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema" / "plan.schema.json"

_REFRESH = "run `bgmatrix plan` (or `nox -s plan`)"

_CELL_KEYS: dict[str, type] = {
    "id": str,
    "kind": str,
    "python": str,
    "tags": list,
}
_NULLABLE_CELL_KEYS: dict[str, type] = {
    "fastapi": str,
    "starlette": str,
    "in_declared_range": bool,
    "starlette_bound": str,
    "cutoff": str,  # null only for cells of local builds (the fault tests' wheels)
}


class _CellNote(TypedDict, total=False):
    note: str  # optional (a base class rather than NotRequired: nox may run on Python < 3.11)


class Cell(_CellNote):
    """One cell of the plan, as schema/plan.schema.json ($defs/cell) describes it."""

    id: str  # e.g. fa-0.110.0_st-0.36.3_py3.8
    kind: Literal["fastapi", "starlette"]
    fastapi: Optional[str]  # None in a Starlette cell
    starlette: Optional[str]
    python: str  # "3.8"
    cutoff: Optional[str]  # other dependencies resolve as of this time (UTC, ...Z); None: today
    tags: list[str]
    in_declared_range: Optional[bool]
    starlette_bound: Optional[Literal["lowest", "highest", "only"]]


# ---------------------------------------------------------------------------- reading


def load_plan(path: os.PathLike | str = PLAN_PATH) -> dict[str, Any]:
    """Read and check a plan file; raise PlanFileError('<path>: <problem>') if unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no plan; {_REFRESH}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"{path}: unreadable ({_one_line(exc)}); {_REFRESH}") from None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{path}: corrupt, not valid JSON ({exc}); {_REFRESH}") from None
    problem = plan_problem(plan)
    if problem:
        raise PlanFileError(f"{path}: {problem}; {_REFRESH}")
    return plan


def load_cells(path: os.PathLike | str = PLAN_PATH) -> list[Cell]:
    """The plan's cells, in plan order (kind, FastAPI, Starlette, Python)."""
    return load_plan(path)["cells"]


def plan_problem(plan: Any) -> Optional[str]:
    """The first structural problem of a loaded plan, or None when it is sound."""
    if not isinstance(plan, dict):
        return "not a JSON object"
    if plan.get("schema") != SCHEMA:
        return f"not a schema-{SCHEMA} plan (schema is {plan.get('schema')!r})"
    if not isinstance(plan.get("cells"), list):
        return "'cells' is missing or not a list"
    # Release lists are what the site and the watch read; a cells-only plan (tests) has none.
    for key in ("pythons", "fastapi", "starlette"):
        if not isinstance(plan.get(key, []), list):
            return f"{key!r} is not a list"
    for kind in ("fastapi", "starlette"):
        for entry in plan.get(kind, []):
            if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
                return f"a {kind} release entry has no version"
    seen = set()
    for position, cell in enumerate(plan["cells"]):
        problem = cell_problem(cell)
        if problem:
            return f"cell {position}: {problem}"
        if cell["id"] in seen:
            return f"cell {position}: duplicate id {cell['id']!r}"
        seen.add(cell["id"])
    return None


def cell_problem(cell: Any) -> Optional[str]:
    """What is wrong with one cell record, or None."""
    if not isinstance(cell, dict):
        return "not a JSON object"
    for key, kind in _CELL_KEYS.items():
        if not isinstance(cell.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    for key, kind in _NULLABLE_CELL_KEYS.items():
        if key not in cell or not (cell[key] is None or isinstance(cell[key], kind)):
            return f"{key!r} is missing or not a {kind.__name__} or null"
    if cell["kind"] not in ("fastapi", "starlette"):
        return f"unknown kind {cell['kind']!r}"
    if not all(isinstance(t, str) for t in cell["tags"]):
        return f"{cell['id']!r}: a tag is not a string"
    try:
        if cell["cutoff"] is not None:
            datetime.strptime(cell["cutoff"], "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return f"{cell['id']!r}: cutoff {cell['cutoff']!r} is not YYYY-MM-DDTHH:MM:SSZ"
    expected = cell_id(cell["fastapi"], cell["starlette"], cell["python"])
    if cell["id"] != expected:
        return f"id {cell['id']!r} does not match its versions (expected {expected!r})"
    return None


def cell_id(fastapi: Optional[str], starlette: Optional[str], python: str) -> str:
    """Readable, filesystem-safe id, e.g. 'fa-0.110.0_st-0.36.3_py3.8' or 'st-0.36.3_py3.8'."""
    parts = []
    if fastapi is not None:
        parts.append(f"fa-{fastapi}")
    # A FastAPI cell without a Starlette says so in its id rather than colliding with others.
    parts.append(f"st-{starlette}" if starlette is not None else "st-none")
    parts.append(f"py{python}")
    return "_".join(parts)


# ---------------------------------------------------------------------------- writing


def render(plan: dict[str, Any]) -> str:
    """Serialise a plan deterministically (stable keys, no generation timestamp)."""
    return json.dumps(plan, indent=1, sort_keys=True) + "\n"


def write_plan(plan: dict[str, Any], path: os.PathLike | str = PLAN_PATH) -> bool:
    """Check and atomically write ``plan`` to ``path``; return True when the bytes changed.

    The text is rendered before anything touches the disk, and goes through a temporary file
    in the same folder and ``os.replace``: readers see the old plan or the new, never half.
    """
    problem = plan_problem(plan)
    if problem:
        raise PlanError(f"{path}: refusing to write a plan that would not load: {problem}")
    target = Path(path)
    text = render(plan)
    try:
        if target.exists() and target.read_text(encoding="utf-8") == text:
            return False
        files.write_text_atomic(target, text)
    except OSError as exc:
        raise PlanError(f"{path}: cannot write: {_one_line(exc)}") from None
    return True


# ---------------------------------------------------------------------------- selecting

_RELEASE = re.compile(r"^v?(\d+(?:\.\d+)*)(.*)$")


def version_key(version: str) -> tuple:
    """Order release versions as versions (0.9.9 < 0.11.1; 1.0.0rc1 < 1.0.0), stdlib only."""
    match = _RELEASE.match(version)
    if not match:
        return ((), 0, version)
    numbers = tuple(int(n) for n in match.group(1).split("."))
    while numbers[-1:] == (0,) and len(numbers) > 1:
        numbers = numbers[:-1]
    rest = match.group(2)
    # A final release sorts after its pre-releases and before its post-releases.
    rank = 1 if not rest else (2 if rest.lstrip(".-_").startswith("post") else 0)
    return (numbers, rank, rest)


def _release(cell: Cell, name: str) -> Optional[str]:
    """The cell's ``name`` release (fastapi or starlette); a Starlette release's own cells
    only, not the FastAPI cells that happen to use it."""
    if name == "fastapi":
        return cell["fastapi"]
    return cell["starlette"] if cell["kind"] == "starlette" else None


def select(
    cells: Sequence[Cell], targets: Sequence[str], tags: Sequence[str], everything: bool = False
) -> list[Cell]:
    """Cells named by id, by ``fastapi==X`` / ``starlette==X``, or carrying every tag.

    An unknown cell, release or tag is a UsageError naming what is planned.
    """
    chosen: list[Cell] = list(cells) if everything else []
    for target in targets:
        name, sep, version = target.partition("==")
        if sep and name in ("fastapi", "starlette"):
            hits = [c for c in cells if _release(c, name) == version]
            if not hits:
                known = sorted({v for c in cells if (v := _release(c, name))}, key=version_key)
                span = f"{known[0]} … {known[-1]}" if known else "none"
                raise UsageError(
                    f"{name} {version} is not a planned release (planned: {span}); "
                    "`bgmatrix plan` refreshes the plan from the package index"
                )
        else:
            hits = [c for c in cells if c["id"] == target]
            if not hits:
                raise UsageError(f"unknown cell {target!r}; `nox -l` lists them")
        chosen.extend(h for h in hits if h not in chosen)
    for tag in tags:
        if not any(tag in c["tags"] for c in cells):
            raise UsageError(f"no cell is tagged {tag!r}")
    if tags:
        pool = chosen or cells
        chosen = [c for c in pool if all(t in c["tags"] for t in tags)]
    return chosen


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
