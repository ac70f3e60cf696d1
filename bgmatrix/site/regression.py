"""The regression record: FastAPI's own test suite without and with each candidate patch
(``candidates/regression.json``, written by ``bgmatrix candidates --regression``), read for
the decision page. Reading only; the page renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bgmatrix import files
from bgmatrix.errors import BgmatrixError
from bgmatrix.spec import ROOT

PATH = ROOT / "candidates" / "regression.json"
FIELDS = ("passed", "failed", "errored", "skipped")


@dataclass(frozen=True)
class Run:
    name: str
    counts: dict[str, object]  # FIELDS -> a count ("?" where the record has none)
    changed: list[str]  # tests whose outcome the patch changed (new failures first)


@dataclass(frozen=True)
class Record:
    fastapi: str  # the FastAPI release the suite ran against
    base: Run  # without a patch
    patched: list[Run]  # one per candidate, by name


class RegressionError(BgmatrixError):
    """candidates/regression.json exists but is unreadable or not a regression record."""


def read(path: Path = PATH) -> Record | None:
    """The record, or None when there is none yet; a broken one is an error, never a page
    that silently omits FastAPI's own test counts."""
    data = files.read_checked(path, "regression", RegressionError, "regression record")
    if data is None:
        return None
    base, runs = data["without_patch"], data["with_patch"]
    return Record(
        fastapi=data["base"]["fastapi"],
        base=Run("without a patch", _counts(base), []),
        patched=[Run(name, _counts(run), list(run["new_failures"]) + list(run["changed"]))
                 for name, run in sorted(runs.items())],
    )


def _counts(run: dict) -> dict[str, object]:
    return {f: run["counts"].get(f, "?") for f in FIELDS}
