"""The Decision page: which resolution of FastAPI #11215, and why, from the measurements.

Top to bottom: a one-line conclusion computed from the results; the requirements table shown
two ways, by decision A (the conflict: drop, warn, merge) and by decision B (copy-on-send:
FastAPI stops assigning to the user's Response), so each verdict can be put down to one of
them; one card per candidate; the compatibility table (``candidates/compat.json``), the cost
table (``candidates/cost.json``), the upstream-readiness check
(``candidates/upstream/check.json``), FastAPI's own tests (``candidates/regression.json``);
links to the brief and to the precedent and usage documents of ``decision/``, which become
pages of their own (:func:`extra_pages`).

Single sources: the requirements are the clauses spec/resolution.md's requirements section
names (:func:`requirements`); which candidate takes which A/B combination is the
``# Decision A: ... · Decision B: ...`` line of each patch's header (:func:`candidates`).
Every input other than the results may be absent while it is being produced: the page then
says "not measured yet" in its place, and a file that exists but is broken is named with its
problem, never skipped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from bgmatrix import files, schemas, spec, vocabulary
from bgmatrix.errors import BgmatrixError
from bgmatrix.site import model, regression
from bgmatrix.site.render import NOT_SEARCHED, code, link, part, raw, table, text, unsearched
from bgmatrix.spec import ROOT

CANDIDATES_DIR = ROOT / "candidates"
DECISION_DIR = ROOT / "decision"
COMPAT_PATH = CANDIDATES_DIR / "compat.json"
COST_PATH = CANDIDATES_DIR / "cost.json"
UPSTREAM_PATH = CANDIDATES_DIR / "upstream" / "check.json"
#: decision/<name>.md -> the site page decision/<name>.md, and its title when the file is absent
DOCUMENTS = {"precedent": "Ecosystem precedent", "usage": "Usage evidence"}
#: The candidate the spec recommends (spec/resolution.md#recommended).
RECOMMENDED = "recommended"
NOT_MEASURED = "not measured yet"
COPY_ON_SEND = "copy-on-send"
BLOCK_END = "\x00"  # between two runs of added lines (never a line of a patch)

#: verdict -> (CSS class, glyph, word): the glyph and word carry the meaning, colour only helps.
WORDS = {
    "conforms": ("v-ok", "✔", "pass"),
    "deviates": ("v-dev", "✘", "fail"),
    "n/a": ("v-na", "–", "not applicable"),
}
UNMEASURED = ("v-none", "?", NOT_MEASURED)


class DecisionInputError(BgmatrixError):
    """A decision input (compat, cost, upstream check) exists but cannot be read."""


# ---------------------------------------------------------------------------------------------
# The requirements, from the spec


def requirements(spec_dir: Path = spec.SPEC_DIR) -> list[str]:
    """The clauses a resolution is graded on (:func:`bgmatrix.spec.resolution_requirements`)."""
    return spec.resolution_requirements(spec_dir)


# ---------------------------------------------------------------------------------------------
# The candidates, from their patch headers


_AB_LINE = re.compile(r"^# Decision A: (.+?) · Decision B: (.+)$", re.M)
_TITLE_LINE = re.compile(r"^# Candidate: (\S+) — (.+)$", re.M)


@dataclass(frozen=True)
class Candidate:
    name: str
    #: what it stands for: the header's first line after the dash
    title: str
    #: the header's A/B line; None when the patch has none (or there is no patch)
    decision_a: str | None
    decision_b: str | None
    header: str
    #: sha256 of the patch file as it is now (None without a patch)
    patch_sha256: str | None
    #: lines the patch adds to fastapi/routing.py, without their "+"
    routing_added: tuple[str, ...] = ()
    #: the same, as the contiguous blocks the patch adds (one per run of "+" lines)
    routing_blocks: tuple[tuple[str, ...], ...] = ()

    @property
    def copy_on_send(self) -> bool | None:
        if self.decision_b is None:
            return None
        return self.decision_b.startswith(COPY_ON_SEND)

    @property
    def conflict_kind(self) -> str:
        """drop, warn or merge: the first word of decision A."""
        return re.split(r"[\s,]", self.decision_a or "?", maxsplit=1)[0]


def read_candidate(path: Path) -> Candidate:
    data = path.read_bytes()
    content = data.decode("utf-8", errors="replace")
    head, added, target = [], [], None
    in_diff = False
    for line in content.splitlines():
        if line.startswith(("diff ", "--- ", "Index: ")):
            in_diff = True
        if not in_diff:
            head.append(line)
            continue
        if line.startswith("+++ "):
            target = line[4:].split("\t")[0].strip()
        elif line.startswith("+") and target and target.endswith("fastapi/routing.py"):
            added.append(line[1:])
        elif added and added[-1] != BLOCK_END:
            added.append(BLOCK_END)  # context or a new hunk: the added block ended
    header = "\n".join(head).strip()
    ab = _AB_LINE.search(header)
    title = _TITLE_LINE.search(header)
    return Candidate(
        name=path.stem,
        title=title.group(2).strip() if title else "",
        decision_a=ab.group(1).strip() if ab else None,
        decision_b=ab.group(2).strip() if ab else None,
        header=header,
        patch_sha256=hashlib.sha256(data).hexdigest(),
        routing_added=tuple(line for line in added if line != BLOCK_END),
        routing_blocks=_blocks(added),
    )


def _blocks(added: list[str]) -> tuple[tuple[str, ...], ...]:
    blocks: list[list[str]] = [[]]
    for line in added:
        if line == BLOCK_END:
            blocks.append([])
        else:
            blocks[-1].append(line)
    return tuple(tuple(b) for b in blocks if b)


def candidates(folder: Path = CANDIDATES_DIR) -> dict[str, Candidate]:
    """Every ``candidates/*.patch``, by name."""
    return {p.stem: read_candidate(p) for p in sorted(folder.glob("*.patch"))}


def candidate_order(cands: Mapping[str, Candidate]) -> list[str]:
    """drop, then warn, then merge; without copy-on-send before with it; the recommended
    resolution last, so the table reads from today towards the recommendation."""
    rank = {"drop": 0, "warn": 1, "merge": 2}

    def key(name: str) -> tuple:
        c = cands[name]
        return (name == RECOMMENDED, rank.get(c.conflict_kind, 3), bool(c.copy_on_send), name)

    return sorted(cands, key=key)


def unknown_candidate(name: str) -> Candidate:
    """A candidate result without a patch in candidates/ (any other build): no A/B known."""
    return Candidate(name, "a build graded without a patch in candidates/", None, None, "",
                     None)


# ---------------------------------------------------------------------------------------------
# Verdicts in words


def expected_text(results_: Sequence[Mapping[str, Any]], clause_id: str) -> str:
    """What the clause expects, as the tests that graded it said (one text per distinct
    expectation), or the vocabulary's text when no test record has it."""
    said: list[str] = []
    for result in results_:
        for record in result.get("tests") or []:
            found = (record.get("verdicts") or {}).get(clause_id) or {}
            if found.get("expected"):
                said.append(str(found["expected"]))
    if not said and clause_id in vocabulary.EXPECTATIONS:
        said.append(vocabulary.EXPECTATIONS[clause_id].text)
    return "; ".join(dict.fromkeys(said))


def words(out: model.Outcome) -> tuple[str, str, str]:
    return WORDS.get(out[0], UNMEASURED) if model.is_measured(out) else UNMEASURED


def verdict_html(result: Mapping[str, Any] | None, clause_id: str) -> Markup:
    if result is None:
        cls, glyph, word = UNMEASURED
        return part("verdict", "decision.html")(cls, glyph, word, "", "", "")
    out = model.outcome(result, clause_id)
    cls, glyph, word = words(out)
    reason = ""
    if out[0] == "missing":
        reason = (f"measured against spec {spec_of(result)}, which did not grade this clause"
                  if spec_of(result) else "this result does not grade the clause")
    elif not model.is_measured(out):
        reason = f"the cell's suite did not run ({out[0]})"
    else:
        reason = (result["clauses"].get(clause_id) or {}).get("reason") or ""
    label = out[1] if model.is_measured(out) and out[0] != "n/a" else ""
    return part("verdict", "decision.html")(cls, glyph, word, label,
                                            expected_text([result], clause_id), reason)


def tally_html(cells: Sequence[Mapping[str, Any]], clause_id: str) -> Markup:
    counts = Counter(model.outcome(r, clause_id) for r in cells)
    lines = []
    for out, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        cls, glyph, word = words(out)
        label = out[1] if model.is_measured(out) and out[0] != "n/a" else ""
        lines.append((cls, glyph, word, n, label))
    return part("tally", "decision.html")(lines, expected_text(cells[:1], clause_id))


def spec_of(result: Mapping[str, Any]) -> str:
    return str((result.get("provenance") or {}).get("spec_version") or "")


@dataclass(frozen=True)
class Grade:
    """One candidate against the requirements: which it meets, fails, or has no measurement of."""

    meets: tuple[str, ...]
    fails: tuple[str, ...]
    unmeasured: tuple[str, ...]


def grade(result: Mapping[str, Any] | None, reqs: Sequence[str]) -> Grade:
    meets, fails, unmeasured = [], [], []
    for cid in reqs:
        out = model.outcome(result, cid) if result is not None else ("missing", "")
        if not model.is_measured(out):
            unmeasured.append(cid)
        elif out[0] == "deviates":
            fails.append(cid)
        else:
            meets.append(cid)
    return Grade(tuple(meets), tuple(fails), tuple(unmeasured))


# ---------------------------------------------------------------------------------------------
# The page


@dataclass
class Context:
    """Everything the page and the brief read, gathered once."""

    snapshot: model.Snapshot
    requirements: list[str]
    candidates: dict[str, Candidate]
    #: candidate name -> its result (the newest cell of that name)
    results: dict[str, Mapping[str, Any]]
    order: list[str]

    def grade(self, name: str) -> Grade:
        return grade(self.results.get(name), self.requirements)

    def cell_id(self, name: str) -> str | None:
        result = self.results.get(name)
        return result["cell"]["id"] if result is not None else None

    @property
    def base_release(self) -> str | None:
        """The release the candidates patch: their results' FastAPI version."""
        versions = [r["cell"]["fastapi"] for r in self.results.values() if r["cell"]["fastapi"]]
        return Counter(versions).most_common(1)[0][0] if versions else None

    def base_cells(self) -> list[Mapping[str, Any]]:
        return list(self.snapshot.by_release("fastapi").get(self.base_release or "", []))


def context(snapshot: model.Snapshot, folder: Path = CANDIDATES_DIR,
            spec_dir: Path | None = None) -> Context:
    reqs = [c for c in requirements(spec_dir or spec.SPEC_DIR) if c in snapshot.clause_by_id]
    cands = candidates(folder)
    found: dict[str, Mapping[str, Any]] = {}
    for result in snapshot.cells("candidate"):
        name = result["cell"]["candidate"] or result["cell"]["id"]
        found[name] = result
        cands.setdefault(name, unknown_candidate(name))
    return Context(snapshot, reqs, cands, found, candidate_order(cands))


def conclusion(ctx: Context) -> str:
    """One line, computed: how the recommended resolution fares, and what every other
    candidate fails."""
    total = len(ctx.requirements)
    if not total:
        return "The spec names no requirements yet (spec/resolution.md#requirements)."
    parts = []
    for name in ctx.order:
        if name == RECOMMENDED:
            continue
        g = ctx.grade(name)
        if name not in ctx.results:
            parts.append(f"{code(name)} ({NOT_MEASURED})")
        elif g.fails:
            parts.append(f"{code(name)} fails {', '.join(g.fails)}")
        else:
            parts.append(f"{code(name)} fails none ({len(g.unmeasured)} not measured)")
    if RECOMMENDED not in ctx.results:
        head = f"The recommended resolution is {NOT_MEASURED}"
    else:
        g = ctx.grade(RECOMMENDED)
        head = f"The recommended resolution meets {len(g.meets)} of {total} requirements"
        if g.fails:
            head += f" and fails {', '.join(g.fails)}"
        if g.unmeasured:
            head += f" ({len(g.unmeasured)} {NOT_MEASURED}: {', '.join(g.unmeasured)})"
    others = [n for n in ctx.order if n != RECOMMENDED]
    all_fail = others and all(ctx.grade(n).fails for n in others)
    tail = ("; every other candidate fails at least one: " if all_fail
            else "; the other candidates: ")
    return head + (tail + "; ".join(parts) if parts else "") + "."


def _requirement_cell(ctx: Context, cid: str) -> Markup:
    clause = ctx.snapshot.clause_by_id[cid]
    return part("requirement", "decision.html")(f"clauses/{cid}.html", cid, clause.keyword,
                                                clause.title)


def _candidate_head(ctx: Context, name: str) -> Markup:
    cand = ctx.candidates[name]
    cid = ctx.cell_id(name)
    title = link(f"cells/{cid}.html", name) if cid else text(name)
    note = f"A: {cand.decision_a or '?'} · B: {cand.decision_b or '?'}"
    result = ctx.results.get(name)
    if result is not None and spec_of(result) and spec_of(result) != ctx.snapshot.spec_version:
        note += f" · measured against spec {spec_of(result)}"
    elif result is None:
        note += f" · {NOT_MEASURED}"
    return part("head", "decision.html")(title, note)


def by_decision_a(ctx: Context) -> list[str]:
    """Rows: requirements. Columns: today's releases by profile, then every candidate, from
    drop through warn to merge, the recommended resolution last."""
    releases = ctx.snapshot.by_release("fastapi")
    groups: dict[str, list[str]] = {}
    for version, cells in releases.items():
        groups.setdefault(model.profile(cells), []).append(version)
    today = sorted(groups.items(), key=lambda kv: model.version_key(kv[1][0]))
    head: list[Any] = ["Requirement"]
    for name, versions in today:
        span = versions[0] if len(versions) == 1 else f"{versions[0]} – {versions[-1]}"
        head.append(part("head", "decision.html")(
            part("strong")(f"today: {name}"),
            f"{len(versions)} releases measured, {span}"))
    head += [_candidate_head(ctx, n) for n in ctx.order]
    rows = []
    for cid in ctx.requirements:
        row: list[Any] = [_requirement_cell(ctx, cid)]
        row += [tally_html([r for v in versions for r in releases[v]], cid)
                for _, versions in today]
        row += [verdict_html(ctx.results.get(n), cid) for n in ctx.order]
        rows.append(row)
    lines = ["## By decision A: what happens in the conflict" + NOT_SEARCHED, "",
             "Today's releases are grouped by the [profile](spec/resolution.md#profiles) their "
             "conflict cases put them in (a count is the number of cells with that outcome); "
             "each candidate is one column, its A/B combination under its name (from its "
             "patch's header). A verdict is a glyph and a word, then the label the suite saw "
             "and what the clause expects.", ""]
    if not ctx.requirements:
        return lines + [f"Requirements: {NOT_MEASURED}.", ""]
    lines.append(raw(part("scroll")(table(head, rows, class_="bgm-table bgm-req"))))
    return lines


@dataclass(frozen=True)
class Column:
    title: str
    decision_a: str
    copy_on_send: bool
    cells: tuple[Mapping[str, Any], ...]  # several for today's release (its Python lines)
    href: str | None
    measured: bool


def b_columns(ctx: Context) -> list[Column]:
    """Pairs that differ only in decision B: candidates sharing decision A, one with
    copy-on-send and one without; today's base release stands for "drop without"."""
    cols: dict[str, dict[bool, Column]] = {}
    base = ctx.base_cells()
    for name in ctx.order:
        cand = ctx.candidates[name]
        if cand.decision_a is None or cand.copy_on_send is None:
            continue
        result = ctx.results.get(name)
        cid = ctx.cell_id(name)
        cols.setdefault(cand.decision_a, {})[cand.copy_on_send] = Column(
            name, cand.decision_a, cand.copy_on_send, (result,) if result else (),
            f"cells/{cid}.html" if cid else None, result is not None)
    if "drop" in cols and False not in cols["drop"]:
        version = ctx.base_release or "?"
        cols["drop"][False] = Column(
            f"FastAPI {version} as released", "drop", False, tuple(base),
            f"cells/{base[0]['cell']['id']}.html" if base else None, bool(base))
    out = []
    for a in sorted(cols, key=lambda a: (a != "drop", a)):
        if len(cols[a]) == 2:
            out += [cols[a][False], cols[a][True]]
    return out


def _verdicts(col: Column, cid: str) -> frozenset[str] | None:
    outs = {model.outcome(r, cid) for r in col.cells}
    if not outs or not all(model.is_measured(o) for o in outs):
        return None
    return frozenset(o[0] for o in outs)


def attribution(cols: Sequence[Column], cid: str) -> str:
    """Which decision the requirement's verdict follows, from the pairs of ``cols``."""
    verdicts = [_verdicts(c, cid) for c in cols]
    if any(v is None for v in verdicts) or not cols:
        return NOT_MEASURED
    pairs = list(zip(verdicts[0::2], verdicts[1::2]))
    by_b = any(no != yes for no, yes in pairs)
    by_a = len({no for no, _ in pairs}) > 1 or len({yes for _, yes in pairs}) > 1
    if by_a and by_b:
        return "A and B: both change it"
    if by_b:
        return "B (copy-on-send) decides it"
    if by_a:
        return "A (the conflict) decides it"
    return "neither: the same verdict in every column"


def by_decision_b(ctx: Context) -> list[str]:
    cols = b_columns(ctx)
    lines = ["## By decision B: copy-on-send" + NOT_SEARCHED, "",
             "Decision B is whether FastAPI stops assigning to the user's `Response` and sends a "
             "shallow copy instead. Each pair of columns shares decision A and differs only in "
             "B; the last column says which decision a requirement's verdict follows: it "
             "changes within a pair (B) or between the pairs (A).", ""]
    if not cols:
        return lines + [f"Not measured yet: no pair of candidates that differ only in "
                        f"decision B has a result ({NOT_MEASURED}).", ""]
    head: list[Any] = ["Requirement"]
    for col in cols:
        name = link(col.href, col.title) if col.href else text(col.title)
        b = "copy-on-send" if col.copy_on_send else "no copy-on-send"
        head.append(part("head", "decision.html")(name, f"A: {col.decision_a} · B: {b}"))
    head.append("Verdict decided by")
    rows = []
    for cid in ctx.requirements:
        row: list[Any] = [_requirement_cell(ctx, cid)]
        for col in cols:
            if not col.cells:
                row.append(verdict_html(None, cid))
            elif len(col.cells) == 1:
                row.append(verdict_html(col.cells[0], cid))
            else:
                row.append(tally_html(col.cells, cid))
        row.append(attribution(cols, cid))
        rows.append(row)
    lines.append(raw(part("scroll")(table(head, rows, class_="bgm-table bgm-req"))))
    return lines


def card(ctx: Context, name: str) -> list[str]:
    cand = ctx.candidates[name]
    result = ctx.results.get(name)
    lines = [f"### {text(name)}", ""]
    facts = [f"Stands for: {text(cand.title or 'no header')}."]
    facts.append(f"Decision A: {text(cand.decision_a or 'not stated in the patch header')} · "
                 f"Decision B: {text(cand.decision_b or 'not stated in the patch header')}.")
    if result is None:
        facts.append(f"Results: {NOT_MEASURED} ({code('bgmatrix candidates ' + name)}).")
    else:
        cid = result["cell"]["id"]
        facts.append(f"Profile in the conflict: {text(model.profile([result]))}. Measured "
                     f"against spec {text(spec_of(result) or '?')}; "
                     f"[cell page with the evidence](cells/{cid}.md).")
        build_ = result["cell"].get("build") or {}
        for key in ("base_sdist_sha256", "patch_sha256", "wheel_sha256"):
            if build_.get(key):
                facts.append(f"Build `{key}`: `{build_[key]}`.")
        if build_.get("patch_sha256") and cand.patch_sha256 \
                and build_["patch_sha256"] != cand.patch_sha256:
            facts.append(f"The patch file has changed since (it now hashes to "
                         f"`{cand.patch_sha256}`): this result graded the earlier version.")
    lines += [" ".join(facts), ""]
    if not ctx.requirements:
        return lines
    g = ctx.grade(name)
    lines += [f"Meets {len(g.meets)} of {len(ctx.requirements)} requirements; fails "
              f"{', '.join(g.fails) or 'none'}; {NOT_MEASURED}: "
              f"{', '.join(g.unmeasured) or 'none'}.", ""]
    rows = [[_requirement_cell(ctx, cid), verdict_html(result, cid)]
            for cid in ctx.requirements]
    # Out of the search index: each card repeats every requirement's title, 5 KB a card; the
    # count above and the requirement list stay searchable.
    lines.append(unsearched(
        part("scroll")(table(["Requirement", "Verdict, label and expectation"], rows,
                             class_="bgm-table bgm-card"))))
    return lines


# -- the other inputs -------------------------------------------------------------------------


def read_input(path: Path, schema: str) -> tuple[Any, str | None]:
    """(data, None); (None, None) when the file is absent; (None, problem) when it is broken.
    Checked against ``schema/<schema>.schema.json`` when that schema exists."""
    try:
        if (schemas.SCHEMA_DIR / f"{schema}.schema.json").is_file():
            return files.read_checked(path, schema, DecisionInputError, schema), None
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, None
    except (DecisionInputError, OSError, ValueError) as exc:
        return None, str(exc)


def _absent(what: str, command: str, problem: str | None) -> list[str]:
    if problem:
        return [f"Not shown: the file exists but cannot be read: {text(problem)}.", ""]
    return [f"Not measured yet: `{command}` writes {what}.", ""]


def compat_section(path: Path | None = None) -> list[str]:
    data, problem = read_input(path or COMPAT_PATH, "compat")
    lines = ["## Compatibility: what changes for existing code", ""]
    if data is None:
        return lines + _absent("`candidates/compat.json`", "bgmatrix compat", problem)
    base = data.get("base", {})
    lines += [f"Each row is an app of the compatibility suite, run on unpatched FastAPI "
              f"{text(base.get('fastapi', '?'))} (the first column) and on every candidate "
              f"(`{text(data.get('command', 'bgmatrix compat'))}`); a cell is marked changed "
              "when its label differs from today's.", ""]
    columns = list(data.get("columns", []))
    rows = []
    for key, row in data.get("rows", {}).items():
        cells = row.get("cells", {})
        out: list[Any] = [part("head", "decision.html")(code(key), row.get("description", ""))]
        for col in columns:
            cell = cells.get(col)
            out.append(part("compat_cell", "decision.html")(cell["changed"], cell["label"])
                       if cell else NOT_MEASURED)
        rows.append(out)
    head = ["App"] + [f"FastAPI {base.get('fastapi', '?')} (today)" if c == "base" else c
                      for c in columns]
    lines.append(raw(part("scroll")(table(head, rows, class_="bgm-table bgm-req"))))
    return lines


def ratio_text(path: Mapping[str, Any]) -> str:
    r = path.get("ratio", {})
    ci = r.get("ci95") or [None, None]
    pct = path.get("overhead_percent")
    pct_s = f"{pct:+.1f} %" if isinstance(pct, (int, float)) else "?"
    return (f"×{r.get('median', '?')} ({pct_s}); quartiles {r.get('p25', '?')}–"
            f"{r.get('p75', '?')}; 95 % CI {ci[0]}–{ci[1]}")


def cost_section(path: Path | None = None) -> list[str]:
    data, problem = read_input(path or COST_PATH, "cost")
    lines = ["## Cost: per-request overhead", ""]
    if data is None:
        return lines + _absent("`candidates/cost.json`", "python scripts/cost.py", problem)
    base = data.get("base", {})
    method = data.get("method", {})
    path_names = list((method.get("paths") or {}).keys()) or ["data", "response", "conflict"]
    lines += [f"Each candidate's time per request over unpatched FastAPI "
              f"{text(base.get('fastapi', '?'))}'s, in the same process with interleaved "
              f"rounds ({text(method.get('rounds', '?'))} rounds): the median ratio, its "
              "quartiles and a 95 % confidence interval of the median. Command: "
              f"`{text(data.get('command', ''))}`.", ""]
    lines.append(raw(part("items")([
        Markup("{}: {}").format(code(p), text((method.get("paths") or {}).get(p, "")))
        for p in path_names])))
    rows = []
    control = data.get("control")
    entries = list((data.get("candidates") or {}).items())
    if control:
        entries.append((f"{control.get('name', 'control')} (unpatched, as noise)", control))
    for name, entry in entries:
        paths = entry.get("paths", {})
        rows.append([text(name)] + [ratio_text(paths[p]) if p in paths else NOT_MEASURED
                                    for p in path_names])
    lines.append(raw(part("scroll")(table(["Candidate", *path_names], rows,
                                          class_="bgm-table bgm-req"))))
    target = data.get("target") or {}
    if target:
        met = target.get("met")
        lines += [f"Target: `{text(target.get('candidate', ''))}` costs at most "
                  f"{text(target.get('max_overhead_percent', '?'))} % on every path — "
                  + ("✔ met." if met else "✘ not met." if met is False else "not decided."), ""]
    return lines


def upstream_section(path: Path | None = None) -> list[str]:
    data, problem = read_input(path or UPSTREAM_PATH, "upstream")
    lines = ["## Upstream readiness", ""]
    if data is None:
        return lines + _absent("`candidates/upstream/check.json`", "bgmatrix upstream", problem)
    suite = data.get("suite", {})
    counts = suite.get("counts", {})
    cov = data.get("coverage", {})
    verdict = data.get("verdict")
    glyph = "✔ pass" if verdict == "pass" else "✘ fail"
    items = [
        f"Verdict: {glyph}.",
        f"FastAPI's full suite with the PR: {counts.get('passed', '?')} passed, "
        f"{counts.get('failed', '?')} failed, {counts.get('errored', '?')} errored, "
        f"{counts.get('skipped', '?')} skipped of {counts.get('total', '?')}; failures caused by "
        f"the patch: {len(suite.get('caused_by_patch', []))}; failing without it too: "
        f"{len(suite.get('failing_without_patch_too', []))}.",
        f"Coverage of the statements the PR adds under `{cov.get('prefix', 'fastapi/')}`: "
        f"{cov.get('covered_statements', '?')} of {cov.get('added_statements', '?')} "
        f"({cov.get('percent', '?')} %).",
        f"Docs hunks checked against the repository: "
        f"{(data.get('repository_check') or {}).get('status', '?')}.",
    ]
    lines += [f"- {text(i)}" for i in items]
    commands = data.get("commands") or {}
    if commands:
        lines += ["", "Commands:", ""]
        lines += [raw(part("pre", "decision.html")("\n".join(
            f"# {k}\n{v}" for k, v in commands.items())))]
    return lines + [""]


def regression_section(record: regression.Record | None) -> list[str]:
    """FastAPI's own test suite without and with each candidate (``regression.read``)."""
    lines = ["## FastAPI's own tests", ""]
    if record is None:
        return lines + ["Not measured yet: `bgmatrix candidates --regression`.", ""]
    rows = [[text(run.name, 80)] + [str(run.counts[f]) for f in regression.FIELDS]
            + [Markup("; ").join(text(t, 200) for t in run.changed)
               or ("" if run is record.base else "none")]
            for run in (record.base, *record.patched)]
    lines.append(raw(table([f"FastAPI {record.fastapi}", *regression.FIELDS,
                            "tests whose outcome changed"], rows)))
    lines += ["", "Measured by `bgmatrix candidates --regression` (FastAPI's `tests/` "
              "from its source distribution, with its `tests` group and `[all]` extras).", ""]
    return lines


def _regression_lines() -> list[str]:
    try:
        return regression_section(regression.read(regression.PATH))
    except regression.RegressionError as exc:
        return ["## FastAPI's own tests", "",
                f"Not shown: the file exists but cannot be read: {text(exc)}.", ""]


# ---------------------------------------------------------------------------------------------
# Pages


def decision(snapshot: model.Snapshot, ctx: Context | None = None) -> str:
    """The Decision page (decision.md)."""
    ctx = ctx or context(snapshot)
    lines = [
        "---\nhide:\n  - toc\n---\n",  # the tables need the width
        "# Decision",
        "",
        f"**{conclusion(ctx)}**",
        "",
        "The case on one page: [the brief](brief.md), ready to paste into FastAPI #11215. "
        "Background: the [resolution chapter](spec/resolution.md#requirements) (the "
        "requirements), the [ecosystem precedent](decision/precedent.md) and the "
        "[usage evidence](decision/usage.md).",
        "",
    ]
    if not snapshot.results:
        lines += ["**No results yet: run `nox` (or `bgmatrix run ...`) to measure releases.**",
                  ""]
    lines += by_decision_a(ctx)
    lines += by_decision_b(ctx)
    lines += ["## The candidates", "",
              "One card per candidate patch (`candidates/`), in the order of the tables.", ""]
    for name in ctx.order:
        lines += card(ctx, name)
    lines += compat_section()
    lines += cost_section()
    lines += upstream_section()
    lines += _regression_lines()
    lines += ["## The requirements", ""]
    lines += [f"- [{cid}](clauses/{cid}.md) ({ctx.snapshot.clause_by_id[cid].keyword}) — "
              f"{text(ctx.snapshot.clause_by_id[cid].title, None)}" for cid in ctx.requirements]
    return "\n".join(lines) + "\n"


def document_page(name: str, folder: Path | None = None) -> str:
    """decision/<name>.md as a site page, as written; a placeholder while it is absent."""
    try:
        return ((folder or DECISION_DIR) / f"{name}.md").read_text(encoding="utf-8")
    except OSError:
        return f"# {DOCUMENTS[name]}\n\nNot measured yet: `decision/{name}.md` is not written.\n"


def extra_pages(snapshot: model.Snapshot) -> list[tuple[str, str]]:
    """The pages beside decision.md: the precedent and usage documents."""
    return [(f"decision/{name}.md", document_page(name)) for name in DOCUMENTS]
