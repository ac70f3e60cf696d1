"""Reading the in-cell suite for the site, without parsing it as Python.

Which test checks which clause comes from the results' own test records (each records its
node id and the clauses its marker names), so the site shows what was measured, and host code
never parses tests/spec with ``ast``.  The suite's source pages are split at top-level
definitions by reading lines: a definition starts at column 0 (``def``, ``async def``,
``class``, or the decorators above them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from bgmatrix.spec import ROOT

SUITE_DIR = ROOT / "tests" / "spec"

_DEF = re.compile(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)")
_TOP = re.compile(r"^[A-Za-z_@]")


@cache  # ~100 distinct node ids, asked for ~120,000 times on the full matrix
def test_name(nodeid: str) -> tuple[str, str]:
    """``test_x.py::test_y[param]`` -> ``("test_x.py", "test_y")``."""
    file, _, name = nodeid.partition("::")
    return Path(file).name, name.split("[", 1)[0]


def tests_by_clause(
    results: Iterable[Mapping[str, Any]]
) -> dict[str, list[tuple[str, str]]]:
    """clause ID -> [(file name, test function)], from every result's test records."""
    found: dict[str, set[tuple[str, str]]] = {}
    for result in results:
        for test in result.get("tests") or []:
            for cid in test.get("clauses") or []:
                found.setdefault(cid, set()).add(test_name(test["test"]))
    return {cid: sorted(tests) for cid, tests in found.items()}


@cache
def defined_tests(suite_dir: Path = SUITE_DIR) -> frozenset[tuple[str, str]]:
    """(file name, function) of every top-level definition in the suite's test files."""
    return frozenset(
        (path.name, name)
        for path in sorted(suite_dir.glob("test_*.py"))
        for name, _ in split_source(path.read_text(encoding="utf-8"))
        if name
    )


def marks_by_test(by_clause: dict[str, list[tuple[str, str]]],
                  file: str) -> dict[str, list[str]]:
    """test function -> the clauses it checks, for one file of the suite."""
    marks: dict[str, list[str]] = {}
    for cid, tests in sorted(by_clause.items()):
        for f, name in tests:
            if f == file:
                marks.setdefault(name, []).append(cid)
    return marks


def split_source(source: str) -> list[tuple[str | None, str]]:
    """The source in chunks, one per top-level statement group: ``(name, text)`` where
    ``name`` is the function or class a chunk defines (decorators included), else None.

    Lines inside a triple-quoted string never start a chunk.
    """
    lines = source.splitlines()
    starts: list[tuple[int, str | None]] = []
    in_string: str | None = None
    decorated = False
    for i, line in enumerate(lines):
        if in_string is None and _TOP.match(line):
            match = _DEF.match(line)
            if decorated:
                if match:  # the decorators' definition: name the chunk they opened
                    starts[-1] = (starts[-1][0], match.group(1))
                    decorated = False
            else:
                starts.append((i, match.group(1) if match else None))
                decorated = line.startswith("@")
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 and (in_string is None or in_string == quote):
                in_string = None if in_string else quote
    chunks: list[tuple[str | None, str]] = []
    if not starts or starts[0][0] > 0:
        chunks.append((None, "\n".join(lines[: starts[0][0] if starts else len(lines)])))
    bounds = [s for s, _ in starts] + [len(lines)]
    for (first, name), end in zip(starts, bounds[1:]):
        chunks.append((name, "\n".join(lines[first:end])))
    return chunks
