"""The release planner: which environments ("cells") the spec suite runs in.

``build_plan`` is a pure function from index data to the plan; :mod:`bgmatrix.plan.store` is
the one reader and writer of ``matrix/plan.json``. ``bgmatrix plan`` refreshes the committed
plan from the package index.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from bgmatrix.plan import store
from bgmatrix.plan.index import Release, fetch_releases, make_client
from bgmatrix.plan.store import cell_id

Cell = dict[str, Any]

SCHEMA = store.SCHEMA

#: The interpreters the project targets, oldest first. 3.8 is the floor because the in-cell
#: spec suite (tests/spec) is written for 3.8; releases that allow older Pythons run on 3.8.
PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")

#: CI splits the cells into this many shards (tag ``shard-K``).
NSHARDS = 8

#: Cutoffs sit this long after the pinned pair appeared, so that a fix-up release of a
#: dependency published the same day still counts as "period-correct".
SLACK = timedelta(days=1)

#: First FastAPI release with ``BackgroundTasks`` injection: nothing older can run the suite.
FASTAPI_FLOOR = "0.10.0"
#: First Starlette release with ``starlette.background`` (``BackgroundTask`` and a response's
#: ``background``; the ``BackgroundTasks`` collection follows in 0.9.9). The suite finds what an
#: old release lacks by capability, so every release back to this one gets a cell.
STARLETTE_FLOOR = "0.3.3"

#: Stands for "the newest release on the index" in the headline tables, so they never go stale.
NEWEST = "newest"

#: FastAPI versions that span the behaviour eras; each gets its highest-Starlette cell tagged
#: ``headline`` (the wall on the home page).
HEADLINE_FASTAPI = (
    "0.10.0",  # first release that injects BackgroundTasks
    "0.22.0",  # last release pinning starlette==0.11.1 (<0.12): ASGI 2 only
    "0.41.0",  # first release requiring starlette>=0.12 (==0.12.9): ASGI 3 only
    "0.42.0",  # first with yield dependencies (measured: LIFE-1 stops being n/a)
    "0.99.1",  # last release on pydantic v1 only
    "0.100.0",  # first release accepting pydantic v2
    "0.105.0",  # last release where yield-dependency teardown runs after background tasks
    "0.106.0",  # teardown moves before the response is sent (before background tasks)
    "0.117.1",  # last release of the teardown-before behaviour
    "0.118.0",  # teardown moves back after the response (and its background tasks)
    "0.121.0",  # first with Depends(scope=...) (checked in the wheel's fastapi/params.py)
    "0.134.0",  # first building streaming responses for generator endpoints (ATTACH-11)
    "0.138.0",  # first with app.frontend(); its dependencies are not even called (ATTACH-13)
    "0.141.1",  # last release before the opentelemetry-api dependency
    "0.142.0",  # first release depending on opentelemetry-api
    NEWEST,
)

#: Starlette releases whose (only) cell is tagged ``headline``.
HEADLINE_STARLETTE = (
    "0.3.3",  # first with starlette.background (BackgroundTask only)
    "0.9.9",  # first with BackgroundTasks
    "0.11.4",  # last before 0.12: last ASGI 2 release
    "0.12.0",  # first ASGI 3 release
    "0.15.0",  # first depending on anyio (background tasks run through anyio)
    "0.17.0",  # BaseHTTPMiddleware swallows task exceptions (measured, MW-3)
    "0.21.0",  # TestClient moves from requests to httpx
    "0.37.2",  # first whose TestClient works with httpx 0.28; FastAPI's floor for a year
    "0.52.1",  # newest 0.x release
    "1.0.0",  # first 1.x release
    NEWEST,
)

#: Behaviour eras of FastAPI as (tag, first FastAPI version), oldest first. A FastAPI cell gets
#: the tag of the last era whose first version is <= its FastAPI version. The boundaries are
#: measured (LIFE-1, ATTACH-11/13, RES-8 in the full sweep), not read from changelogs.
ERAS = (
    ("era-asgi2", "0.10.0"),
    # 0.23.0-0.40.x allow both starlette 0.11 and 0.12, so their cells straddle ASGI 2/3;
    # this era starts where every allowed Starlette is ASGI 3.
    ("era-asgi3", "0.41.0"),
    ("era-yield-deps", "0.42.0"),  # yield dependencies appear; teardown after the tasks
    ("era-teardown-before", "0.106.0"),  # LIFE-1: teardown before the response is sent
    ("era-teardown-after", "0.118.0"),  # LIFE-1: teardown after the tasks again
    ("era-streaming", "0.134.0"),  # generator endpoints: FastAPI builds streaming responses
    ("era-frontend", "0.138.0"),  # app.frontend() groups; their tasks lost until 0.141.1
    ("era-telemetry", "0.142.0"),  # per-task telemetry spans
)

# ---------------------------------------------------------------------------- building


def build_plan(
    fastapi_releases: Sequence[Release], starlette_releases: Sequence[Release]
) -> dict[str, Any]:
    """Return the plan for the given releases (pure: same input, same output)."""
    fastapi = _usable(fastapi_releases, FASTAPI_FLOOR)
    starlette_all = _usable(starlette_releases, None)
    starlette = [r for r in starlette_all if Version(r.version) >= Version(STARLETTE_FLOOR)]
    cells: list[Cell] = []
    for release in fastapi:
        cells.extend(fastapi_cells(release, starlette_all, newest=release is fastapi[-1]))
    cells.extend(starlette_cell(release) for release in starlette)
    cells = tag_cells(sorted(cells, key=cell_sort_key), fastapi, starlette)
    # Starlette releases below the floor are listed only when a FastAPI cell pins one.
    used = {c["starlette"] for c in cells} | {r.version for r in starlette}
    listed = [r for r in starlette_all if r.version in used]
    return {
        "schema": SCHEMA,
        "slack_days": SLACK.days,
        "pythons": list(PYTHONS),
        "fastapi": [_fastapi_entry(r) for r in fastapi],
        "starlette": [_starlette_entry(r) for r in listed],
        "cells": cells,
    }


def _usable(releases: Iterable[Release], floor: Optional[str]) -> list[Release]:
    """Final, unyanked releases at or above ``floor``, one per version, oldest first."""
    by_version: dict[Version, Release] = {}
    for release in releases:
        version = Version(release.version)
        if release.yanked or version.is_prerelease or version.is_devrelease:
            continue
        if floor is None or version >= Version(floor):
            by_version.setdefault(version, release)
    return [by_version[v] for v in sorted(by_version)]


def fastapi_cells(release: Release, starlette: Sequence[Release], newest: bool) -> list[Cell]:
    """Cells for one FastAPI release: lowest and highest allowed Starlette (untagged)."""
    spec, problem = declared_spec(release, "starlette")
    declared = SpecifierSet(spec or "")
    allowed = [] if spec is None else [r for r in starlette if r.version in declared]
    if spec is not None and not allowed:
        problem = f"declared starlette {spec!r} matches no release on the index"
    if not allowed:
        # Pick nothing behind the reader's back: the cell exists, says why it has no Starlette.
        cells = [_fastapi_cell(release, None, None, problem)]
    elif allowed[0] is allowed[-1]:
        cells = [_fastapi_cell(release, allowed[0], "only", None)]
    else:
        cells = [
            _fastapi_cell(release, allowed[0], "lowest", None),
            _fastapi_cell(release, allowed[-1], "highest", None),
        ]
    if newest:
        # The newest release is the one users install today, on whatever interpreter they have.
        cells += on_newer_pythons(cells[-1])
    return cells


def on_newer_pythons(cell: Cell) -> list[Cell]:
    """Copies of ``cell`` on every target interpreter newer than its own."""
    return [
        dict(cell, python=python, id=cell_id(cell["fastapi"], cell["starlette"], python))
        for python in PYTHONS
        if Version(python) > Version(cell["python"])
    ]


def _fastapi_cell(
    release: Release, starlette: Optional[Release], bound: Optional[str], note: Optional[str]
) -> Cell:
    """One FastAPI cell on the oldest interpreter both releases allow."""
    pair = [release] if starlette is None else [release, starlette]
    python, problem = python_for(pair)
    cell: Cell = {
        "id": cell_id(release.version, starlette.version if starlette else None, python),
        "kind": "fastapi",
        "fastapi": release.version,
        "starlette": starlette.version if starlette else None,
        "python": python,
        "cutoff": cutoff_for(pair),
        # Bounds are picked from the declared range, so they are inside it by construction;
        # the field exists so that out-of-range experiments can say otherwise.
        "in_declared_range": True if starlette else None,
        "starlette_bound": bound if starlette else None,
        "tags": [],
    }
    notes = [n for n in (note, problem) if n]
    if notes:
        cell["note"] = "; ".join(notes)
    return cell


def starlette_cell(release: Release) -> Cell:
    """The one cell of a Starlette release, on the oldest interpreter it allows (untagged)."""
    python, problem = python_for([release])
    cell: Cell = {
        "id": cell_id(None, release.version, python),
        "kind": "starlette",
        "fastapi": None,
        "starlette": release.version,
        "python": python,
        "cutoff": cutoff_for([release]),
        "in_declared_range": None,
        "starlette_bound": None,
        "tags": [],
    }
    if problem:
        cell["note"] = problem
    return cell


def declared_spec(release: Release, name: str) -> tuple[Optional[str], Optional[str]]:
    """Return (specifier declared for dependency ``name``, why it is missing) of a release.

    Only requirements outside extras count: those are what ``pip install fastapi`` gets.
    """
    if release.requires_dist is None:
        return None, f"Requires-Dist unknown ({release.note or 'not read'})"
    spec: Optional[SpecifierSet] = None
    for line in release.requires_dist:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            return None, f"unparsable Requires-Dist line {line!r}"
        if _canonical(requirement.name) != name:
            continue
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        spec = requirement.specifier if spec is None else spec & requirement.specifier
    if spec is None:
        return None, f"Requires-Dist names no {name}"
    return str(spec), None


def python_for(releases: Sequence[Release]) -> tuple[str, Optional[str]]:
    """Return (oldest target interpreter all ``releases`` allow, problem if there is none)."""
    for python in PYTHONS:
        if all(_allows(r.requires_python, python) for r in releases):
            return python, None
    wanted = ", ".join(f"{r.version} requires {r.requires_python}" for r in releases)
    # Keep the cell (on the newest interpreter) so the gap shows up as a failed cell.
    return PYTHONS[-1], f"no target interpreter fits ({wanted})"


def _allows(requires_python: Optional[str], python: str) -> bool:
    """True when a Requires-Python string admits interpreter ``python`` (e.g. '3.8')."""
    if not requires_python:
        return True
    try:
        return Version(python) in SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True  # installers ignore an invalid Requires-Python, so must we


def cutoff_for(releases: Sequence[Release]) -> str:
    """Return the resolver cutoff: the latest upload among ``releases`` plus SLACK."""
    latest = max(parse_time(r.uploaded) for r in releases)
    return (latest + SLACK).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse 'YYYY-MM-DDTHH:MM:SSZ' as an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def cell_sort_key(cell: Cell) -> tuple:
    """Order cells by kind, FastAPI version, Starlette version, Python version."""
    return (
        cell["kind"],
        _version_key(cell["fastapi"]),
        _version_key(cell["starlette"]),
        Version(cell["python"]),
    )


def _version_key(text: Optional[str]) -> tuple[bool, Version]:
    """Sort key that puts a missing version first."""
    return (text is not None, Version(text or "0"))


# ---------------------------------------------------------------------------- tags


def tag_cells(
    cells: list[Cell], fastapi: Sequence[Release], starlette: Sequence[Release]
) -> list[Cell]:
    """Return sorted ``cells`` with their tags filled in (kind, lines, era, python, shard...)."""
    headline = headline_ids(cells, fastapi, starlette)
    tagged = []
    for index, cell in enumerate(cells):
        tags = {cell["kind"], f"py{cell['python']}", f"shard-{index % NSHARDS + 1}"}
        if cell["fastapi"] is not None:
            tags.add(f"fa-{minor_line(cell['fastapi'])}")
            era = era_for(cell["fastapi"])
            if era is not None:
                tags.add(era)
        if cell["starlette"] is not None:
            tags.add(f"st-{minor_line(cell['starlette'])}")
        if cell["id"] in headline:
            tags.add("headline")
        tagged.append(dict(cell, tags=sorted(tags)))
    return tagged


def minor_line(version: str) -> str:
    """'0.110.3' -> '0.110': the release line a version belongs to."""
    major, minor = (Version(version).release + (0,))[:2]
    return f"{major}.{minor}"


def era_for(fastapi_version: str) -> Optional[str]:
    """Return the ERAS tag for a FastAPI version, or None before the first era."""
    found = None
    for tag, first in ERAS:
        if Version(fastapi_version) >= Version(first):
            found = tag
    return found


def headline_ids(
    cells: Sequence[Cell], fastapi: Sequence[Release], starlette: Sequence[Release]
) -> set[str]:
    """Ids of the headline cells: highest-Starlette cell per headline FastAPI, and Starlette."""
    wanted_fastapi = set(_resolve(HEADLINE_FASTAPI, fastapi))
    wanted_starlette = set(_resolve(HEADLINE_STARLETTE, starlette))
    chosen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        if cell["kind"] == "fastapi" and cell["fastapi"] in wanted_fastapi:
            if cell["starlette_bound"] == "lowest":
                continue
            key = ("fastapi", cell["fastapi"])
        elif cell["kind"] == "starlette" and cell["starlette"] in wanted_starlette:
            key = ("starlette", cell["starlette"])
        else:
            continue
        # The oldest interpreter is the headline; the newest FastAPI's extra ones are not.
        if key not in chosen or Version(cell["python"]) < Version(chosen[key]["python"]):
            chosen[key] = cell
    return {cell["id"] for cell in chosen.values()}


def _resolve(headlines: Sequence[str], releases: Sequence[Release]) -> list[str]:
    """Turn a headline table into version strings, NEWEST into the newest release."""
    versions = [r.version for r in releases]
    resolved = [versions[-1] if v == NEWEST and versions else v for v in headlines]
    return [v for v in resolved if v in versions]


def missing_headlines(plan: dict[str, Any]) -> list[str]:
    """Headline versions the plan's releases do not contain (for a warning)."""
    have = {
        "fastapi": {r["version"] for r in plan["fastapi"]},
        "starlette": {r["version"] for r in plan["starlette"]},
    }
    tables = (("fastapi", HEADLINE_FASTAPI), ("starlette", HEADLINE_STARLETTE))
    return [
        f"{kind} {v}"
        for kind, table in tables
        for v in table
        if v != NEWEST and v not in have[kind]
    ]


# ---------------------------------------------------------------------------- entries


def _fastapi_entry(release: Release) -> dict[str, Any]:
    """The plan's record of one FastAPI release."""
    starlette, problem = declared_spec(release, "starlette")
    pydantic, _ = declared_spec(release, "pydantic")
    entry = {
        "version": release.version,
        "uploaded": release.uploaded,
        "requires_python": release.requires_python,
        "starlette": starlette,
        "pydantic": pydantic,
    }
    if release.requires_dist is None:
        entry["note"] = problem
    return entry


def _starlette_entry(release: Release) -> dict[str, Any]:
    """The plan's record of one Starlette release."""
    return {
        "version": release.version,
        "uploaded": release.uploaded,
        "requires_python": release.requires_python,
    }


def _canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


# ---------------------------------------------------------------------------- file


# ---------------------------------------------------------------------------- command


def summary(plan: dict[str, Any]) -> str:
    """One line: release and cell counts."""
    cells = plan["cells"]
    by_kind = {k: sum(1 for c in cells if c["kind"] == k) for k in ("fastapi", "starlette")}
    headline = sum(1 for c in cells if "headline" in c["tags"])
    noted = sum(1 for c in cells if "note" in c)
    return (
        f"{len(plan['fastapi'])} FastAPI and {len(plan['starlette'])} Starlette releases; "
        f"{len(cells)} cells ({by_kind['fastapi']} fastapi, {by_kind['starlette']} starlette, "
        f"{headline} headline, {noted} with notes)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=store.PLAN_PATH,
                        help="plan file (default: matrix/plan.json)")


def command(args: argparse.Namespace) -> int:
    """Refresh the plan file from the package index."""
    started = time.monotonic()
    with make_client() as client:
        fastapi, starlette = fetch_releases(client)
    plan = build_plan(fastapi, starlette)
    changed = store.write_plan(plan, args.out)
    missing = missing_headlines(plan)
    if missing:
        print(f"bgmatrix plan: warning: headline releases not on the index: {', '.join(missing)}",
              file=sys.stderr)
    state = "wrote" if changed else "unchanged"
    elapsed = time.monotonic() - started
    print(f"{state} {args.out}: {summary(plan)} in {elapsed:.1f}s")
    return 0
