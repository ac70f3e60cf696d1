"""The Fidelity page ("Is each cell the environment its release was tested with?"), from
matrix/fidelity.json (written by `bgmatrix fidelity`, bgmatrix/run/fidelity.py; read here
through its schema, never through the runner).

Per line: the cell, what its own tests did there (passed, failed, skipped, errors), whether the
rebuilt environment matches the cell's committed result, and every failure with what looking
at it found. Every number is the record's; the fixed texts explain states only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgmatrix import spec
from bgmatrix.errors import FidelityError
from bgmatrix.files import read_checked_once
from bgmatrix.plan.store import version_key
from bgmatrix.site.markup import esc
from bgmatrix.site.render import NOT_SEARCHED, code

FIDELITY_PATH = spec.ROOT / "matrix" / "fidelity.json"
PAGE = "fidelity.md"
TITLE = "Is each cell the environment its release was tested with?"

STATE_WORDS = {
    "ok": "every selected test passed or was skipped",
    "failures": "some tests failed; each is explained below",
    "no-sdist": "no source distribution on the package index",
    "no-tests": "the source distribution ships no tests",
    "install-error": "the tests' own dependencies did not install",
    "no-interpreter": "the cell's Python is not on this machine",
    "error": "the tests did not run",
}


def load(path: Path = FIDELITY_PATH) -> dict[str, Any] | None:
    """The record, valid against schema/fidelity.schema.json (read once per version of it:
    the home page and the Fidelity page both need it); None when none is committed; a corrupt
    file is a one-line :class:`FidelityError`."""
    return read_checked_once(path, "fidelity", FidelityError, "fidelity record")


def _order(line: str) -> tuple:
    project, _, version = line.partition("-")
    return (project != "starlette", version_key(version))


def _environment(entry: dict[str, Any]) -> str:
    found = entry.get("environment")
    if not found or found["matches_result"] is None:
        return "—"
    if found["matches_result"]:
        return "same as its result"
    return "differs: " + ", ".join(f"{esc(n)} {esc(a)} → {esc(b)}"
                                   for n, (a, b) in sorted(found["differences"].items()))


def _cell(cell_id: str, cells: Collection[str]) -> str:
    """The cell's id, a link where the snapshot has its page (a results folder of a few cells
    builds a site without the others)."""
    if cell_id in cells:
        return f"[{esc(cell_id)}](cells/{cell_id}.md)"
    return str(code(cell_id))


def line_table(data: dict[str, Any], project: str, cells: Collection[str]) -> list[str]:
    rows = [(k, e) for k, e in sorted(data["lines"].items(), key=lambda kv: _order(kv[0]))
            if k.startswith(project + "-")]
    lines = ["| Line | Cell | State | Passed | Failed | Skipped | Errors | pytest | "
             "Environment |", "|" + " --- |" * 9]
    for key, e in rows:
        t = e["totals"]
        state = esc(e["state"]) if e["state"] in ("ok", "failures") else (
            f"{esc(e['state'])}: {esc(STATE_WORDS.get(e['state'], ''))}")
        if e.get("tests_from"):  # the sdist had none: the release's tag gave them
            state += (f" (tests from tag {esc(e['tests_from']['git_tag'])}, "
                      f"{code(e['tests_from']['commit'][:12])})")
        lines.append(f"| {esc(key.partition('-')[2])} | {_cell(e['cell']['id'], cells)} | "
                     f"{state} | {t['passed']} | {t['failed']} | {t['skipped']} | "
                     f"{t['errors']} | {esc(e['pytest'] or '—')} | {_environment(e)} |")
    return lines


def failure_section(data: dict[str, Any]) -> list[str]:
    """Each explanation once, with the lines it covers and (out of the search index) the tests
    it explains; then every failure not yet explained, one by one. Grouped because one cause
    (root and a chmod'ed folder) fails the same test on every Starlette line."""
    ordered = sorted(data["lines"].items(), key=lambda kv: _order(kv[0]))
    out: list[str] = []
    for key, e in ordered:
        if e["message"] and e["state"] not in ("no-tests", "no-sdist"):
            out += [f"- {esc(key)}: {esc(e['state'])}: {esc(e['message'])}"]
    if out:
        out = ["### Lines whose tests did not run", ""] + out + [""]
    groups: dict[str, dict[str, list[str]]] = {}
    cell_caused: set[str] = set()  # explanations that blame the cell's environment
    unexplained: list[str] = []
    for key, e in ordered:
        for f in e["failures"]:
            if not f["explanation"]:
                unexplained.append(f"- {esc(key)}: {code(f['test'])} ({esc(f['outcome'])}: "
                                   f"{esc(f['reason'])})")
                continue
            groups.setdefault(f["explanation"], {}).setdefault(key, []).append(f["test"])
            if f["environment_problem"]:
                cell_caused.add(f["explanation"])
    for explanation, by_line in sorted(groups.items(),
                                       key=lambda kv: -sum(map(len, kv[1].values()))):
        count = sum(map(len, by_line.values()))
        tests = sorted({t for names in by_line.values() for t in names})
        out += [f"### {count} failure{'s' if count != 1 else ''} on {len(by_line)} "
                f"line{'s' if len(by_line) != 1 else ''}: "
                + ("the cell differs from the release's CI" if explanation in cell_caused
                   else "not the cell's packages"), "",
                esc(explanation), "",
                "Lines: " + ", ".join(f"{esc(k)} ({len(v)})" for k, v in by_line.items()), "",
                f"#### The tests{NOT_SEARCHED}", ""]
        out += [f"- {code(t)}" for t in tests] + [""]
    if unexplained:
        out += [f"### {len(unexplained)} not yet explained", ""] + unexplained + [""]
    return out or ["None.", ""]


@dataclass(frozen=True)
class Totals:
    """What the page's lead and the home line say of the whole record."""
    lines: int  # every line of the record
    measured: int  # lines whose tests ran ("ok" or "failures")
    passed: int
    failed: int  # failed or errored tests
    unexplained: int
    same: int  # rebuilt environments that hold exactly their result's packages

    @classmethod
    def of(cls, data: dict[str, Any]) -> Totals:
        entries = list(data["lines"].values())
        measured = [e for e in entries if e["state"] in ("ok", "failures")]
        return cls(
            lines=len(entries), measured=len(measured),
            passed=sum(e["totals"]["passed"] for e in measured),
            failed=sum(e["totals"]["failed"] + e["totals"]["errors"] for e in measured),
            unexplained=sum(1 for e in entries for f in e["failures"] if not f["explanation"]),
            same=sum(1 for e in entries if (e.get("environment") or {}).get("matches_result")))


def home_line(data: dict[str, Any] | None) -> str:
    """The home page's one line on the record (a bullet), or "" when none is committed."""
    if data is None:
        return ""
    t = Totals.of(data)
    return (f"- **Are the cells the releases' own environments?** {t.measured} of {t.lines} "
            "minor lines ran the release's own background and middleware tests in their cell: "
            f"{t.passed} passed, {t.failed} failed or errored, "
            + (f"{t.unexplained} not yet explained" if t.unexplained
               else "every failure explained")
            + f"; {t.same} rebuilt environments match their results ([Fidelity]({PAGE})).")


def page(data: dict[str, Any] | None, cells: Collection[str] = ()) -> str:
    """The page; ``cells`` are the ids the snapshot has pages for (the others are not links)."""
    lines = [f"# {TITLE}", ""]
    if data is None:
        return "\n".join(lines + ["Not measured yet: `bgmatrix fidelity` writes "
                                  "`matrix/fidelity.json`.", ""])
    t = Totals.of(data)
    lines += [
        f"**{t.measured} of {t.lines} lines ran their own tests in their cell: "
        f"{t.passed} tests passed, {t.failed} failed or errored ({t.unexplained} not yet "
        f"explained); {t.same} rebuilt environments hold exactly the packages their committed "
        "result recorded.**", "",
        "One cell per minor line (the line's newest release; for FastAPI the cell with the "
        "highest Starlette inside its declared range; the lowest planned Python). The tests "
        f"come from the release's source distribution: {esc(data['selection'])}. What they "
        "import that the cell lacks, and pytest, are installed as of the cell's cutoff beside "
        "the cell, never into it. Where the sdist ships no tests, they come from the "
        "release's tag in the project's repository (`bgmatrix fidelity --git`), and the line "
        "says so. Measured by `bgmatrix fidelity`; raw record: `matrix/fidelity.json`.", ""]
    lines += ["## Failures and what they are", ""] + failure_section(data)
    for project, title in (("starlette", "Starlette"), ("fastapi", "FastAPI")):
        # Out of the search index: a row per line; the lead and the explanations stay.
        lines += [f"## {title} lines{NOT_SEARCHED}", ""] + line_table(data, project, cells)
        lines += [""]
    return "\n".join(lines) + "\n"


def generate(page_writer: Callable[[str, str], Any], cells: Collection[str]) -> None:
    """Write the Fidelity page (build.generate's hook); ``cells``: the snapshot's cell ids."""
    page_writer(PAGE, page(load(), cells))
