"""The spec's clauses, read from spec/*.md: the one source of truth for clause IDs.

Everything else (the suite's coverage check, result validation, the site) asks this module
which clauses exist, at which level, since which spec version, whether they are about FastAPI
#11215, and with which normative sentence.  Two kinds of clause share one anatomy:

- graded clauses (every prefix but ``REC``), returned by :func:`load`: the suite grades each one;
- the recommended rule's clauses (``REC-n``), returned by :func:`recommendation`: not graded on
  their own; each names, under *Observed by*, the graded clauses whose verdicts observe it.

IDs withdrawn in an earlier version are listed in spec/index.md (:func:`withdrawn`) and can
never be used again.
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
    "shapes",
    "resolution",
)

#: Chapters whose clauses are measured apart from the in-cell suite, each by a mode of its own
#: (deployment: `bgmatrix deploy`, bgmatrix/run/deploy.py, per server and adapter). They are
#: parsed and checked with the rest (unique, unreserved IDs; Since), never graded per cell.
APART = ("deployment",)

#: Prefix of the recommended rule's clauses, which are observed through graded clauses.
RECOMMENDATION_PREFIX = "REC"

#: Scope values of the meta line: about the conflict of FastAPI #11215, or not.
SCOPE_IN, SCOPE_OUT = "#11215", "outside #11215"

_HEADING = re.compile(r"^### ([A-Z]+-\d+) — (.+) \{#\1\}$", re.M)
_SEMVER = r"\d+\.\d+\.\d+"
_META = re.compile(
    r"^Level: (FastAPI|Starlette) · Scenarios: ([\d, ]+)"
    rf" · Since: ({_SEMVER}) · Scope: ({SCOPE_IN}|{SCOPE_OUT})$",
    re.M,
)
_KEYWORD = re.compile(r"^\*\*(MUST NOT|MUST|SHOULD NOT|SHOULD|MAY)\.\*\* (.+)$", re.M)
_VERSION = re.compile(rf"^Spec version: ({_SEMVER})$", re.M)
_OBSERVED_BY = re.compile(r"^\*Observed by\.\*(.*?)(?=^\*[A-Z][^*]*\.\*|\Z)", re.M | re.S)
_LINKED_ID = re.compile(r"\[([A-Z]+-\d+)\]\(")
_WITHDRAWN_SECTION = re.compile(r"^## Withdrawn clause IDs \{#withdrawn\}$", re.M)
_WITHDRAWN = re.compile(rf"^- ([A-Z]+-\d+) — withdrawn in ({_SEMVER}): (.+)$")
_CHANGELOG_SECTION = re.compile(r"^## Changelog \{#changelog\}$", re.M)
_CHANGELOG_VERSION = re.compile(rf"^### ({_SEMVER})\b.*$", re.M)


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
    since: str  # the spec version that introduced the clause
    in_issue: bool  # Scope: #11215 (True) or outside #11215 (False)
    observed_by: tuple[str, ...] = ()  # REC clauses: the graded clauses that observe them

    @property
    def anchor(self) -> str:
        return f"{self.chapter}.md#{self.id}"

    @property
    def graded(self) -> bool:
        """Whether the suite grades the clause itself (every clause but the REC ones and those
        of the chapters measured apart)."""
        return not self.id.startswith(RECOMMENDATION_PREFIX + "-") and self.chapter not in APART


@dataclass(frozen=True)
class Withdrawn:
    """A clause ID withdrawn from the spec: reserved for ever, never reused."""

    id: str
    version: str  # the spec version that withdrew it
    reason: str


def parse_chapter(chapter: str, text: str) -> list[Clause]:
    """Clauses of one chapter's Markdown, in document order (REC clauses included)."""
    heads = list(_HEADING.finditer(text))
    clauses = []
    for head in heads:
        end = _section_end(text, head.end())  # a clause heading is itself a level-3 heading
        body = text[head.start() : end].rstrip() + "\n"
        cid = head.group(1)
        meta, keyword = _META.search(body), _KEYWORD.search(body)
        if not meta or not keyword:
            raise SpecError(
                f"spec/{chapter}.md: clause {cid} lacks its Level or keyword line (the meta line"
                " is 'Level: … · Scenarios: … · Since: X.Y.Z · Scope: #11215|outside #11215')"
            )
        observed: tuple[str, ...] = ()
        if cid.startswith(RECOMMENDATION_PREFIX + "-"):
            found = _OBSERVED_BY.search(body)
            observed = tuple(dict.fromkeys(_LINKED_ID.findall(found.group(1)))) if found else ()
            if not observed:
                raise SpecError(
                    f"spec/{chapter}.md: clause {cid} names no graded clause under *Observed by*"
                )
        clauses.append(
            Clause(
                id=cid,
                title=head.group(2),
                chapter=chapter,
                level=meta.group(1),
                keyword=keyword.group(1),
                sentence=keyword.group(2).strip(),
                scenarios=tuple(int(s) for s in meta.group(2).replace(" ", "").split(",") if s),
                text=body,
                since=meta.group(3),
                in_issue=meta.group(4) == SCOPE_IN,
                observed_by=observed,
            )
        )
    return clauses


def _section_end(text: str, start: int) -> int:
    """A clause ends at the next heading of level 1-3, clause or not (or the end of the file)."""
    nxt = re.compile(r"^#{1,3} ", re.M).search(text, start)
    return nxt.start() if nxt else len(text)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@cache
def clause_order(clause_id: str) -> tuple[str, int]:
    """Sort key of a clause ID: ATTACH-2 before ATTACH-10 (chapter, then number as a number).
    Any other text sorts by itself, before the numbered IDs of the same prefix."""
    prefix, sep, number = clause_id.rpartition("-")
    return (prefix, int(number)) if sep and number.isdigit() else (clause_id, -1)


def _index(spec_dir: Path) -> str:
    path = spec_dir / "index.md"
    if not path.is_file():
        raise SpecError(f"{path}: missing front matter")
    return path.read_text(encoding="utf-8")


def _section(text: str, heading: re.Pattern[str]) -> str | None:
    """The body of the level-2 section whose heading matches, up to the next level-2 heading."""
    head = heading.search(text)
    if not head:
        return None
    nxt = re.compile(r"^#{1,2} ", re.M).search(text, head.end())
    return text[head.end() : nxt.start() if nxt else len(text)]


def withdrawn(spec_dir: Path = SPEC_DIR) -> tuple[Withdrawn, ...]:
    """The withdrawn clause IDs listed in spec/index.md, section "Withdrawn clause IDs".

    An entry is a list item ``- <ID> — withdrawn in <version>: <reason>``; the reason may wrap
    onto indented continuation lines.  No section means no withdrawn ID."""
    body = _section(_index(spec_dir), _WITHDRAWN_SECTION)
    if body is None:
        return ()
    items: list[str] = []
    for line in body.splitlines():
        if line.startswith("- "):
            items.append(line)
        elif line.startswith((" ", "\t")) and line.strip() and items:
            items[-1] += " " + line.strip()
    entries = []
    for item in items:
        match = _WITHDRAWN.match(item)
        if not match:
            raise SpecError(f"spec/index.md: withdrawn entry not understood: {item!r}")
        entries.append(Withdrawn(match.group(1), match.group(2), match.group(3).strip()))
    return tuple(entries)


def reserved(spec_dir: Path = SPEC_DIR) -> frozenset[str]:
    """IDs that no clause may use: every withdrawn ID."""
    return frozenset(w.id for w in withdrawn(spec_dir))


def _load_all(spec_dir: Path) -> tuple[Clause, ...]:
    """Every clause, graded and REC, chapter by chapter, checked against the front matter."""
    clauses: list[Clause] = []
    for chapter in (*CHAPTERS, *APART):
        path = spec_dir / f"{chapter}.md"
        if not path.is_file():
            raise SpecError(f"{path}: missing chapter")
        clauses.extend(parse_chapter(chapter, path.read_text(encoding="utf-8")))
    seen: set[str] = set()
    for clause in clauses:
        if clause.id in seen:
            raise SpecError(f"clause {clause.id} is defined twice")
        seen.add(clause.id)
    taken = sorted(seen & reserved(spec_dir), key=clause_order)
    if taken:
        raise SpecError(
            f"clause IDs {', '.join(taken)} were withdrawn and are reserved: use a new number"
        )
    version = spec_version(spec_dir)
    for clause in clauses:
        if _version_key(clause.since) > _version_key(version):
            raise SpecError(
                f"clause {clause.id}: Since {clause.since} is later than spec version {version}"
            )
        unknown = [cid for cid in clause.observed_by if cid not in seen]
        if unknown:
            raise SpecError(f"clause {clause.id} is observed by unknown clauses {unknown}")
    return tuple(clauses)


def load(spec_dir: Path = SPEC_DIR) -> tuple[Clause, ...]:
    """Every graded clause of the spec, chapter by chapter; IDs must be unique and must not be
    withdrawn ones."""
    return tuple(c for c in _load_all(spec_dir) if c.graded)


def recommendation(spec_dir: Path = SPEC_DIR) -> tuple[Clause, ...]:
    """The recommended rule's clauses (REC-n), in document order; not graded themselves."""
    return tuple(c for c in _load_all(spec_dir)
                 if c.id.startswith(RECOMMENDATION_PREFIX + "-"))


def measured_apart(spec_dir: Path = SPEC_DIR) -> tuple[Clause, ...]:
    """The clauses of the chapters in :data:`APART`, in document order: measured by a mode of
    their own, never by the in-cell suite."""
    return tuple(c for c in _load_all(spec_dir) if c.chapter in APART)


def by_id(spec_dir: Path = SPEC_DIR) -> dict[str, Clause]:
    return {c.id: c for c in load(spec_dir)}


def starlette_level(spec_dir: Path = SPEC_DIR) -> list[str]:
    """IDs of the clauses that are checked on pure Starlette apps too."""
    return [c.id for c in load(spec_dir) if c.level == "Starlette"]


@cache
def spec_version(spec_dir: Path = SPEC_DIR) -> str:
    match = _VERSION.search(_index(spec_dir))
    if not match:
        raise SpecError("spec/index.md: no 'Spec version: X.Y.Z' line")
    return match.group(1)


def changelog(spec_dir: Path = SPEC_DIR) -> dict[str, str]:
    """Spec version -> its entry (Markdown) from spec/index.md, section "Changelog", newest
    first as written.  Entries are level-3 headings that start with the version number."""
    body = _section(_index(spec_dir), _CHANGELOG_SECTION)
    if body is None:
        return {}
    heads = list(_CHANGELOG_VERSION.finditer(body))
    return {
        head.group(1): body[head.end() : heads[i + 1].start() if i + 1 < len(heads) else None]
        .strip()
        for i, head in enumerate(heads)
    }


# The clauses a resolution is graded on: spec/resolution.md's requirements section names them
# (the site's Decision page, `bgmatrix candidates` and the brief all read this one list).
_REQUIREMENTS = re.compile(r"^## [^\n]*\{#requirements\}\s*$", re.M)
_LINKED = re.compile(r"\[([A-Z]+-\d+)\]\(")
_CLAUSE_HEAD = re.compile(r"^### ([A-Z]+-\d+) — ", re.M)


def resolution_requirements(spec_dir: Path = SPEC_DIR) -> list[str]:
    """The clauses a resolution is graded on, as spec/resolution.md's requirements section
    names them: the clauses of other chapters its introduction links, then its own clauses;
    grouped by prefix in the order the section names them, by number within a prefix."""
    try:
        chapter = (spec_dir / "resolution.md").read_text(encoding="utf-8")
    except OSError:
        return []
    start = _REQUIREMENTS.search(chapter)
    if start is None:
        return []
    end = chapter.find("\n## ", start.end())
    section = chapter[start.end(): end if end >= 0 else len(chapter)]
    first_clause = _CLAUSE_HEAD.search(section)
    intro = section[: first_clause.start() if first_clause else len(section)]
    found = list(dict.fromkeys(_LINKED.findall(intro) + _CLAUSE_HEAD.findall(section)))
    prefixes = list(dict.fromkeys(cid.split("-")[0] for cid in found))
    return sorted(found, key=lambda c: (prefixes.index(c.split("-")[0]),
                                        int(c.split("-")[1])))
