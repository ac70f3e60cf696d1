"""The spec's clauses, read from spec/*.md: the one source of truth for clause IDs.

Everything else (the suite's coverage check, result validation, the site) asks this module
which clauses exist, at which level and with which normative sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bgmatrix.errors import BgmatrixError

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "spec"

#: Chapter files in reading order (spec/index.md is the front matter, not a chapter).
CHAPTERS = (
    "collection",
    "attachment",
    "execution",
    "lifecycle",
    "isolation",
    "middleware",
    "resolution",
)

_HEADING = re.compile(r"^### ([A-Z]+-\d+) — (.+) \{#\1\}$", re.M)
_META = re.compile(r"^Level: (FastAPI|Starlette) · Scenarios: ([\d, ]+)$", re.M)
_KEYWORD = re.compile(r"^\*\*(MUST NOT|MUST|SHOULD NOT|SHOULD|MAY)\.\*\* (.+)$", re.M)
_VERSION = re.compile(r"^Spec version: (\d+\.\d+\.\d+)$", re.M)


class SpecError(BgmatrixError):
    """spec/ does not have the shape the tools rely on."""


@dataclass(frozen=True)
class Clause:
    id: str
    title: str
    chapter: str
    level: str  # "FastAPI" or "Starlette"
    keyword: str  # MUST, MUST NOT, SHOULD, SHOULD NOT, MAY
    sentence: str
    scenarios: tuple[int, ...]
    text: str  # the clause's whole Markdown section, heading included

    @property
    def anchor(self) -> str:
        return f"{self.chapter}.md#{self.id}"


def parse_chapter(chapter: str, text: str) -> list[Clause]:
    """Clauses of one chapter's Markdown, in document order."""
    heads = list(_HEADING.finditer(text))
    clauses = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else _section_end(text, head.end())
        body = text[head.start() : end].rstrip() + "\n"
        meta, keyword = _META.search(body), _KEYWORD.search(body)
        if not meta or not keyword:
            raise SpecError(
                f"spec/{chapter}.md: clause {head.group(1)} lacks its Level or keyword line"
            )
        clauses.append(
            Clause(
                id=head.group(1),
                title=head.group(2),
                chapter=chapter,
                level=meta.group(1),
                keyword=keyword.group(1),
                sentence=keyword.group(2).strip(),
                scenarios=tuple(int(s) for s in meta.group(2).replace(" ", "").split(",") if s),
                text=body,
            )
        )
    return clauses


def _section_end(text: str, start: int) -> int:
    """A clause ends at the next heading of level 1-3 (or the end of the file)."""
    nxt = re.compile(r"^#{1,3} ", re.M).search(text, start)
    return nxt.start() if nxt else len(text)


@cache
def clause_order(clause_id: str) -> tuple[str, int]:
    """Sort key of a clause ID: ATTACH-2 before ATTACH-10 (chapter, then number as a number).
    Any other text sorts by itself, before the numbered IDs of the same prefix."""
    prefix, sep, number = clause_id.rpartition("-")
    return (prefix, int(number)) if sep and number.isdigit() else (clause_id, -1)


def load(spec_dir: Path = SPEC_DIR) -> tuple[Clause, ...]:
    """Every clause of the spec, chapter by chapter; IDs must be unique."""
    clauses: list[Clause] = []
    for chapter in CHAPTERS:
        path = spec_dir / f"{chapter}.md"
        if not path.is_file():
            raise SpecError(f"{path}: missing chapter")
        clauses.extend(parse_chapter(chapter, path.read_text(encoding="utf-8")))
    seen: set[str] = set()
    for clause in clauses:
        if clause.id in seen:
            raise SpecError(f"clause {clause.id} is defined twice")
        seen.add(clause.id)
    return tuple(clauses)


def by_id(spec_dir: Path = SPEC_DIR) -> dict[str, Clause]:
    return {c.id: c for c in load(spec_dir)}


def starlette_level(spec_dir: Path = SPEC_DIR) -> list[str]:
    """IDs of the clauses that are checked on pure Starlette apps too."""
    return [c.id for c in load(spec_dir) if c.level == "Starlette"]


@cache
def spec_version(spec_dir: Path = SPEC_DIR) -> str:
    match = _VERSION.search((spec_dir / "index.md").read_text(encoding="utf-8"))
    if not match:
        raise SpecError("spec/index.md: no 'Spec version: X.Y.Z' line")
    return match.group(1)
