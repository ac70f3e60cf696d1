"""Unit tests of the release planner (bgmatrix.plan.planner) and its index reader
(bgmatrix.plan.index).

All data is hand-written (tests/unit/fixtures/plan/) or built in memory: no network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from packaging.version import Version
from pypi_simple import DistributionPackage, ProjectPage

from bgmatrix import cli
from bgmatrix.plan import index, planner, store
from bgmatrix.plan.index import IndexUnavailable, Release
from bgmatrix.plan.planner import build_plan
from bgmatrix.plan.store import PlanError, load_plan, render, write_plan

FIXTURES = Path(__file__).parent / "fixtures" / "plan"


def load_fixture(name: str = "releases.json") -> tuple[list[Release], list[Release]]:
    """Return (fastapi, starlette) releases from a fixture file."""
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))

    def release(entry: dict) -> Release:
        requires = entry.get("requires_dist")
        return Release(**dict(entry, requires_dist=None if requires is None else tuple(requires)))

    return [release(e) for e in data["fastapi"]], [release(e) for e in data["starlette"]]


@pytest.fixture(scope="module")
def built() -> dict:
    """The plan of the fixture releases."""
    return build_plan(*load_fixture())


def cells_of(built_plan: dict, fastapi: str) -> dict[str, dict]:
    """The cells of one FastAPI version, by id."""
    return {c["id"]: c for c in built_plan["cells"] if c["fastapi"] == fastapi}


def cell(built_plan: dict, cell_id: str) -> dict:
    """The cell with this id."""
    (found,) = [c for c in built_plan["cells"] if c["id"] == cell_id]
    return found


# ---------------------------------------------------------------- Starlette selection


def test_range_gives_lowest_and_highest_starlette(built):
    cells = cells_of(built, "0.23.0")
    assert sorted(cells) == ["fa-0.23.0_st-0.11.1_py3.8", "fa-0.23.0_st-0.12.0_py3.8"]
    assert cells["fa-0.23.0_st-0.11.1_py3.8"]["starlette_bound"] == "lowest"
    assert cells["fa-0.23.0_st-0.12.0_py3.8"]["starlette_bound"] == "highest"
    assert all(c["in_declared_range"] is True for c in cells.values())


def test_pre_releases_and_yanked_releases_are_never_picked(built):
    versions = {c["starlette"] for c in built["cells"]} | {c["fastapi"] for c in built["cells"]}
    assert not versions & {"0.12.0b1", "0.20.2", "0.100.0b1", "0.107.0"}


def test_post_release_counts_as_highest(built):
    cells = cells_of(built, "0.106.0")
    assert {c["starlette"]: c["starlette_bound"] for c in cells.values()} == {
        "0.27.0": "lowest",
        "0.27.0.post1": "highest",
    }


def test_exact_pin_gives_one_cell(built):
    (only,) = cells_of(built, "0.10.0").values()
    assert only["id"] == "fa-0.10.0_st-0.11.1_py3.8"
    assert only["starlette_bound"] == "only"


def test_releases_below_the_floors_get_no_cells(built):
    assert not cells_of(built, "0.9.0")
    # Starlette 0.3.2 predates starlette.background; 0.9.8 has it (BackgroundTask only).
    ids = {c["id"] for c in built["cells"]}
    assert "st-0.3.2_py3.8" not in ids and "st-0.9.8_py3.8" in ids
    assert [r["version"] for r in built["starlette"]][0] == "0.9.8"


@pytest.mark.parametrize(
    ("fastapi", "fragment"),
    [
        ("0.118.0", "Requires-Dist unknown (sdist only"),
        ("0.119.0", "declared starlette '>=5.0' matches no release"),
        ("0.120.0", "Requires-Dist names no starlette"),
    ],
)
def test_unknown_starlette_makes_a_noted_cell_without_starlette(built, fastapi, fragment):
    (only,) = cells_of(built, fastapi).values()
    assert only["id"] == f"fa-{fastapi}_st-none_py3.8"
    assert only["starlette"] is None and only["starlette_bound"] is None
    assert only["in_declared_range"] is None
    assert fragment in only["note"]


def test_release_entries_carry_declared_specs(built):
    entries = {r["version"]: r for r in built["fastapi"]}
    assert entries["0.10.0"]["starlette"] == "==0.11.1"
    assert entries["0.10.0"]["pydantic"] == "<=0.21.0,>=0.17"
    # Requirements inside extras are not what `pip install fastapi` gets.
    assert entries["0.120.0"]["starlette"] is None
    assert "note" in entries["0.118.0"] and "note" not in entries["0.10.0"]


# ---------------------------------------------------------------- python and cutoff


def test_python_is_oldest_allowed_by_both_releases(built):
    cells = cells_of(built, "0.130.0")
    # FastAPI wants >=3.10; starlette 1.0.0 wants >=3.11.
    assert cells["fa-0.130.0_st-0.27.0_py3.10"]["starlette_bound"] == "lowest"
    assert cells["fa-0.130.0_st-1.0.0_py3.11"]["starlette_bound"] == "highest"
    assert cell(built, "st-0.9.9_py3.8")["python"] == "3.8"  # no Requires-Python at all
    assert cell(built, "st-1.0.0_py3.11")["python"] == "3.11"


def test_newest_fastapi_also_runs_on_newer_interpreters_with_highest_starlette(built):
    assert sorted(cells_of(built, "0.130.0")) == [
        "fa-0.130.0_st-0.27.0_py3.10",
        "fa-0.130.0_st-1.0.0_py3.11",
        "fa-0.130.0_st-1.0.0_py3.12",
        "fa-0.130.0_st-1.0.0_py3.13",
    ]
    # Older releases stay on one interpreter.
    assert {c["python"] for c in cells_of(built, "0.106.0").values()} == {"3.8"}


def test_no_fitting_interpreter_is_a_visible_note():
    fastapi = [Release("0.10.0", "2019-03-29T10:00:00Z", ">=3.99", False, ("starlette",))]
    starlette = [Release("0.11.1", "2019-02-19T12:00:00Z", ">=3.6")]
    (only,) = [c for c in build_plan(fastapi, starlette)["cells"] if c["kind"] == "fastapi"]
    assert only["python"] == planner.PYTHONS[-1]
    assert "no target interpreter fits" in only["note"]


def test_cutoff_is_later_upload_plus_one_day(built):
    # starlette 0.12.0 (2019-07-13T12:00) is later than fastapi 0.23.0 (2019-05-21).
    assert cell(built, "fa-0.23.0_st-0.12.0_py3.8")["cutoff"] == "2019-07-14T12:00:00Z"
    # fastapi 0.10.0 (2019-03-29T10:00) is later than starlette 0.11.1.
    assert cell(built, "fa-0.10.0_st-0.11.1_py3.8")["cutoff"] == "2019-03-30T10:00:00Z"
    # Starlette cells: their own upload only; slack crosses the month boundary.
    assert cell(built, "fa-0.130.0_st-0.27.0_py3.10")["cutoff"] == "2026-02-21T23:30:00Z"
    assert cell(built, "st-0.12.0_py3.8")["cutoff"] == "2019-07-14T12:00:00Z"
    assert built["slack_days"] == 1


def test_null_starlette_cell_cutoff_uses_fastapi_alone(built):
    assert cell(built, "fa-0.118.0_st-none_py3.8")["cutoff"] == "2025-09-30T10:00:00Z"


# ---------------------------------------------------------------- ids, order, tags


def test_cells_are_sorted_and_ids_unique(built):
    ids = [c["id"] for c in built["cells"]]
    assert len(ids) == len(set(ids)) == 19
    assert ids == [c["id"] for c in sorted(built["cells"], key=planner.cell_sort_key)]
    kinds = [c["kind"] for c in built["cells"]]
    assert kinds == sorted(kinds)
    # Versions compare as versions, not strings: 0.10.0 before 0.23.0 before 0.106.0.
    fastapi = [c["fastapi"] for c in built["cells"] if c["kind"] == "fastapi"]
    assert fastapi.index("0.23.0") < fastapi.index("0.106.0")


def test_ids_are_filesystem_safe(built):
    for c in built["cells"]:
        assert all(ch.isalnum() or ch in "._-" for ch in c["id"]), c["id"]


def test_line_era_python_and_kind_tags(built):
    tags = cell(built, "fa-0.23.0_st-0.12.0_py3.8")["tags"]
    assert {"fastapi", "fa-0.23", "st-0.12", "era-asgi2", "py3.8"} <= set(tags)
    assert tags == sorted(tags)
    assert "era-teardown-before" in cell(built, "fa-0.106.0_st-0.27.0.post1_py3.8")["tags"]
    assert {"starlette", "st-0.27", "py3.8"} <= set(cell(built, "st-0.27.0.post1_py3.8")["tags"])
    assert not any(t.startswith("era-") for t in cell(built, "st-0.12.0_py3.8")["tags"])


@pytest.mark.parametrize(
    ("version", "era"),
    [
        ("0.9.0", None),
        ("0.10.0", "era-asgi2"),
        ("0.40.9", "era-asgi2"),
        ("0.41.0", "era-asgi3"),
        ("0.41.9", "era-asgi3"),
        ("0.42.0", "era-yield-deps"),
        ("0.105.9", "era-yield-deps"),
        ("0.106.0", "era-teardown-before"),
        ("0.117.1", "era-teardown-before"),
        ("0.118.0", "era-teardown-after"),
        ("0.133.9", "era-teardown-after"),
        ("0.134.0", "era-streaming"),
        ("0.138.0", "era-frontend"),
        ("0.141.1", "era-frontend"),
        ("0.142.0", "era-telemetry"),
        ("1.0.0", "era-telemetry"),
    ],
)
def test_era_for(version, era):
    assert planner.era_for(version) == era


def test_tables_are_ordered_and_single_sourced():
    firsts = [Version(v) for _, v in planner.ERAS]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts)
    assert planner.ERAS[0][1] == planner.FASTAPI_FLOOR
    fixed = [Version(v) for v in planner.HEADLINE_FASTAPI if v != planner.NEWEST]
    assert fixed == sorted(fixed)


def test_minor_line():
    assert planner.minor_line("0.110.3") == "0.110"
    assert planner.minor_line("0.26.0.post1") == "0.26"
    assert planner.minor_line("1") == "1.0"


def test_headline_cells(built):
    headline = sorted(c["id"] for c in built["cells"] if "headline" in c["tags"])
    assert headline == [
        "fa-0.10.0_st-0.11.1_py3.8",  # exact pin: its only cell
        "fa-0.106.0_st-0.27.0.post1_py3.8",  # the highest Starlette, not the lowest
        "fa-0.118.0_st-none_py3.8",  # a headline without Starlette still shows
        "fa-0.130.0_st-1.0.0_py3.11",  # newest: its oldest interpreter only
        "st-0.12.0_py3.8",
        "st-0.9.9_py3.8",
        "st-1.0.0_py3.11",  # both "1.0.0" and "newest"
    ]


def test_missing_headlines_are_reported(built):
    missing = planner.missing_headlines(built)
    assert "fastapi 0.22.0" in missing and "starlette 0.15.0" in missing
    assert "fastapi 0.10.0" not in missing


def test_shards_round_robin_over_sorted_cells(built):
    shards = [[t for t in c["tags"] if t.startswith("shard-")] for c in built["cells"]]
    assert shards == [[f"shard-{i % planner.NSHARDS + 1}"] for i in range(len(built["cells"]))]


def test_shards_and_bytes_do_not_depend_on_input_order(built):
    fastapi, starlette = load_fixture()
    again = build_plan(list(reversed(fastapi)), list(reversed(starlette)))
    assert render(again) == render(built)


# ---------------------------------------------------------------- file


def test_write_is_deterministic_and_round_trips(built, tmp_path):
    path = tmp_path / "matrix" / "plan.json"
    assert write_plan(built, path) is True
    first = path.read_bytes()
    assert write_plan(build_plan(*load_fixture()), path) is False  # unchanged: not rewritten
    assert path.read_bytes() == first
    assert first.endswith(b"}\n") and b"generated" not in first
    assert load_plan(path) == json.loads(first)
    assert sorted(os.listdir(path.parent)) == ["plan.json"]


def test_failed_write_leaves_previous_file_untouched(built, tmp_path, monkeypatch):
    path = tmp_path / "plan.json"
    path.write_text("previous\n", encoding="utf-8")

    def refuse(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", refuse)
    with pytest.raises(PlanError, match=r"plan\.json: cannot write: disk full"):
        write_plan(built, path)
    assert path.read_text(encoding="utf-8") == "previous\n"
    assert os.listdir(tmp_path) == ["plan.json"]  # no temporary file left behind


def test_unserialisable_plan_touches_nothing(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("previous\n", encoding="utf-8")
    with pytest.raises(PlanError, match="refusing to write a plan that would not load"):
        write_plan({"schema": 1, "cells": [object()]}, path)
    assert os.listdir(tmp_path) == ["plan.json"]
    assert path.read_text(encoding="utf-8") == "previous\n"


def test_load_plan_rejects_truncated_json(built, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(render(built)[:500], encoding="utf-8")
    with pytest.raises(PlanError, match=r"plan\.json: corrupt, not valid JSON") as caught:
        load_plan(path)
    assert "\n" not in str(caught.value)


def test_load_plan_rejects_wrong_schema(built, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(dict(built, schema=2)), encoding="utf-8")
    with pytest.raises(PlanError, match=r"plan\.json: not a schema-1 plan \(schema is 2\)"):
        load_plan(path)


def test_load_plan_rejects_missing_file(tmp_path):
    with pytest.raises(PlanError, match=r"plan\.json: no plan; run `bgmatrix plan`"):
        load_plan(tmp_path / "plan.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "fa-9_st-9_py3.8"}, "does not match its versions"),
        ({"kind": "other"}, "unknown kind"),
        ({"tags": "headline"}, "'tags' is missing or not a list"),
        ({"cutoff": "yesterday"}, "is not YYYY-MM-DDTHH:MM:SSZ"),
    ],
)
def test_load_plan_rejects_broken_cells(built, tmp_path, change, message):
    broken = json.loads(render(built))
    broken["cells"][0].update(change)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(PlanError, match=message):
        load_plan(path)


def test_load_plan_rejects_duplicate_ids(built, tmp_path):
    broken = json.loads(render(built))
    broken["cells"].append(broken["cells"][0])
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(PlanError, match="duplicate id"):
        load_plan(path)


# ---------------------------------------------------------------- index (fake client)


def wheel_bytes(name: str, version: str, requires: list[str]) -> bytes:
    """A minimal wheel whose METADATA lists ``requires``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {r}" for r in requires]
        archive.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines) + "\n")
        archive.writestr(f"{name}/__init__.py", "")
    return buffer.getvalue()


def package(filename: str, version: str, kind: str, uploaded: datetime, **extra):
    """A DistributionPackage as the JSON API describes it."""
    return DistributionPackage(
        filename=filename,
        url=f"fake://files/{filename}",
        project=filename.split("-")[0],
        version=version,
        package_type=kind,
        digests=extra.pop("digests", {}),
        requires_python=extra.pop("requires_python", None),
        has_sig=None,
        upload_time=uploaded,
        **extra,
    )


class FakeResponse:
    """Just enough of requests.Response."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def raise_for_status(self) -> None:
        """Always fine."""


class FakeSession:
    """Serves file downloads from a dict; optionally fails like a dropped connection."""

    def __init__(self, files: dict[str, bytes], fail: bool = False) -> None:
        self.files = files
        self.fail = fail

    def get(self, url: str, timeout: float | None = None) -> FakeResponse:
        """Return the file, or raise ConnectionError."""
        if self.fail:
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return FakeResponse(self.files[url])


class FakeClient:
    """A stand-in for PyPISimple: project pages and downloads from memory."""

    def __init__(self, pages: dict[str, list], files: dict[str, bytes], fail_get=False) -> None:
        self.pages = pages
        self.s = FakeSession(files, fail=fail_get)

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_exc) -> None:
        return None

    def get_project_page(self, project: str, timeout: float | None = None) -> ProjectPage:
        """The page of one project."""
        return ProjectPage(project, self.pages[project], "1.1", None)


def at(day: int, hour: int = 0) -> datetime:
    """A UTC moment in December 2018 (with microseconds, as the index reports)."""
    return datetime(2018, 12, day, hour, 0, 0, 123456, tzinfo=timezone.utc)


def fake_index(fail_get: bool = False) -> FakeClient:
    """Two FastAPI and two Starlette versions, with the awkward cases the index has."""
    wheel = wheel_bytes("fastapi", "0.10.0", ["starlette (==0.11.1)", "pydantic (>=0.17)"])
    wheel_name = "fastapi-0.10.0-py3-none-any.whl"
    fastapi = [
        # The sdist was uploaded first: the release date is the earliest file.
        package("fastapi-0.10.0.tar.gz", "0.10.0", "sdist", at(3, 9), requires_python=">=3.5"),
        package(
            wheel_name, "0.10.0", "wheel", at(3, 10), requires_python=">=3.6",
            digests={"sha256": hashlib.sha256(wheel).hexdigest()},
        ),
        package("fastapi-0.11.0b1-py3-none-any.whl", "0.11.0b1", "wheel", at(4)),
        package("fastapi-0.11.0-py3-none-any.whl", "0.11.0", "wheel", at(5), is_yanked=True),
    ]
    starlette = [
        package("starlette-0.11.1.tar.gz", "0.11.1", "sdist", at(1)),
        package("starlette-0.12.0.tar.gz", "0.12.0", "sdist", at(2), requires_python=">=3.6"),
    ]
    return FakeClient(
        {"fastapi": fastapi, "starlette": starlette},
        {f"fake://files/{wheel_name}": wheel},
        fail_get=fail_get,
    )


def test_fetch_releases_reads_dates_python_and_requires_dist():
    fastapi, starlette = index.fetch_releases(fake_index())
    assert fastapi == [
        Release(
            version="0.10.0",
            uploaded="2018-12-03T09:00:00Z",
            requires_python=">=3.6",  # the wheel's value wins over the sdist's
            yanked=False,
            requires_dist=("starlette (==0.11.1)", "pydantic (>=0.17)"),
        )
    ]
    assert [(r.version, r.requires_python) for r in starlette] == [
        ("0.11.1", None),
        ("0.12.0", ">=3.6"),
    ]


def test_list_releases_flags_yanked_and_drops_pre_releases():
    releases = index.list_releases(fake_index(), "fastapi")
    assert [(r.version, r.yanked) for r in releases] == [("0.10.0", False), ("0.11.0", True)]


class UnreachableClient(FakeClient):
    """A client whose every request fails as if the network were down."""

    def __init__(self) -> None:
        super().__init__({}, {})

    def get_project_page(self, project: str, timeout: float | None = None) -> ProjectPage:
        """Fail like requests does when DNS or TCP fails."""
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool: Max retries exceeded\n(Caused by NewConnectionError)"
        )


def test_unreachable_index_raises_one_line_index_unavailable():
    with pytest.raises(IndexUnavailable) as caught:
        index.fetch_releases(UnreachableClient())
    message = str(caught.value)
    assert message.startswith("package index could not be reached: ConnectionError: ")
    assert "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_failure_during_metadata_download_raises_index_unavailable():
    with pytest.raises(IndexUnavailable, match="connection reset by peer"):
        index.fetch_releases(fake_index(fail_get=True))


def test_main_prints_one_line_and_exits_2_when_index_unreachable(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(planner, "make_client", UnreachableClient)
    out = tmp_path / "plan.json"
    assert cli.main(["plan", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("bgmatrix plan: package index could not be reached")
    assert not out.exists()


def test_main_writes_the_plan_and_summarises(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(planner, "make_client", fake_index)
    out = tmp_path / "plan.json"
    assert cli.main(["plan", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    # The only FastAPI release is also the newest: one cell per target interpreter.
    assert "1 FastAPI and 2 Starlette releases; 8 cells (6 fastapi, 2 starlette" in captured.out
    assert captured.err.count("\n") == 1 and "headline releases not on the index" in captured.err
    assert load_plan(out)["cells"][0]["id"] == "fa-0.10.0_st-0.11.1_py3.8"
