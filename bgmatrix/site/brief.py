"""``bgmatrix brief``: the one-page decision brief for FastAPI #11215, as Markdown to paste.

    bgmatrix brief [--results DIR]

The same text is the site's brief.md page (``bgmatrix report``). Everything in it is computed
from the snapshot and the decision inputs the Decision page reads (``decision.context``):
the options with the code each adds to ``fastapi/routing.py`` (from the patches), who is
affected (``candidates/compat.json``), the traps and which candidates fall into them (the
results), the precedent and usage (``decision/``), the recommendation with its cost
(``candidates/cost.json``) and a migration path. Every link points at a clause, cell or page
at the pinned snapshot: the snapshot's own published pages
(:func:`bgmatrix.site.cite.snapshot_root`). Its prose (code blocks aside) stays under about
700 words.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bgmatrix.site import cite, decision, model
from bgmatrix.site.decision import NOT_MEASURED, RECOMMENDED, Context
from bgmatrix.site.markup import md_code

#: The traps the suite measures: (name, what goes wrong, the clauses that catch it).
TRAPS = (
    ("Identity duplicates", "the injected object passed as the Response's own background runs "
     "its tasks twice", ("ATTACH-6", "RES-2")),
    ("Reused-Response replay", "a module-level Response carries one request's tasks into the "
     "next", ("ISO-1",)),
    ("Late tasks lost", "tasks added after the Response was built, in a function-scoped "
     "teardown or by a running task do not run", ("RES-9", "RES-10", "RES-11")),
    ("False warnings", "a warning where nothing is lost, an exception under `-W error`",
     ("RES-3",)),
    ("Cleanup skipped", "a failing injected task skips the Response's own background (a temp "
     "file not removed)", ("EXEC-7",)),
)
#: The step before the merge: warn only where a task is really lost.
WARN_STEP = "warn-on-loss"
#: The choices the #11215 thread is deciding between, in the order the brief shows them (the
#: literal warning of PR #15112, a warning on a real loss only, the merge of PR #14386 as
#: written, the recommendation). The other candidates isolate decisions A and B; the brief
#: names them in one line and the Decision page grades them.
OPTIONS = ("warn", WARN_STEP, "merge-response-first", RECOMMENDED)
MAX_CODE_LINES = 20
WORD_LIMIT = 700


# ---------------------------------------------------------------------------------------------
# Pinned links


def page_url(name: str, snapshot: model.Snapshot, anchor: str = "") -> str:
    """A page of the snapshot's own published pages (``cite.snapshot_root``)."""
    return f"{cite.snapshot_root(snapshot.id)}{name}.html" + (f"#{anchor}" if anchor else "")


def clause(cid: str, snapshot: model.Snapshot) -> str:
    return f"[{cid}]({cite.clause_url(cid, snapshot)})"


def candidate(ctx: Context, name: str) -> str:
    cid = ctx.cell_id(name)
    if cid is None:
        return f"{md_code(name, 80)} ({NOT_MEASURED})"
    return f"[{md_code(name, 80)}]({cite.cell_url(cid, ctx.snapshot)})"


def clauses(ids: Iterable[str], snapshot: model.Snapshot) -> str:
    return ", ".join(clause(c, snapshot) for c in ids)


# ---------------------------------------------------------------------------------------------
# The code each option adds


def _strip(lines: Sequence[str]) -> list[str]:
    """Added lines without imports, comments and docstrings."""
    out: list[str] = []
    in_doc = False
    for line in lines:
        s = line.strip()
        if in_doc:
            in_doc = not s.endswith('"""')
            continue
        if s.startswith('"""'):
            in_doc = not (len(s) > 3 and s.endswith('"""'))
            continue
        if not s or s.startswith("#") or re.match(r"(from|import) ", line):
            continue
        out.append(re.sub(r"\s+#.*$", "", line.rstrip()))
    return out


def _join_signatures(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending: list[str] | None = None
    for line in lines:
        if pending is not None:
            pending.append(line.strip())
            if line.strip().startswith(")"):
                joined = pending[0] + " ".join(pending[1:-1]) + pending[-1]
                out.append(joined)
                pending = None
            continue
        if re.match(r"\s*(async )?def \w+\($", line):
            pending = [line.rstrip()]
            continue
        out.append(line)
    return out + (pending or [])


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _dedent(lines: list[str]) -> list[str]:
    cut = min((_indent(x) for x in lines), default=0)
    return [x[cut:] for x in lines]


def _skip_helpers(lines: list[str]) -> list[str]:
    """``__init__`` methods (they only store references) are left out; a helper that only
    formats and emits a warning (``_warn*``) is named, not shown."""
    out: list[str] = []
    skip_at: int | None = None
    for line in lines:
        if skip_at is not None and _indent(line) > skip_at:
            continue
        skip_at = None
        found = re.match(r"(\s*)(?:async )?def (__init__|_warn\w*)\(", line)
        if found:
            skip_at = len(found.group(1))
            if found.group(2) != "__init__":
                out.append(f"{found.group(1)}def {found.group(2)}(...): ...")
            continue
        out.append(line)
    return out


def code_lines(cand: decision.Candidate, limit: int = MAX_CODE_LINES) -> list[str]:
    """The lines the candidate adds to fastapi/routing.py, reduced to code (no imports,
    comments or docstrings), each added block dedented, repeated call sites
    once: at most ``limit`` lines, the rest counted in a last comment line."""
    shown: list[str] = []
    seen: set[str] = set()
    for block in cand.routing_blocks:
        lines = _skip_helpers(_dedent(_join_signatures(_strip(block))))
        key = re.sub(r"^(response=|return)", "", re.sub(r"\s+", "", "".join(lines)))
        if not lines or key in seen:
            continue
        seen.add(key)
        shown += lines
    if len(shown) > limit:
        more = len(shown) - limit + 1
        shown = shown[: limit - 1] + [f"# ({more} more added lines in candidates/"
                                      f"{cand.name}.patch)"]
    return shown


# ---------------------------------------------------------------------------------------------
# Sections


def _sentences(markdown: str, heading: str, count: int) -> list[str]:
    """The first sentence of each of the first ``count`` bullets under ``heading``."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    if match is None:
        return []
    bullets = re.findall(r"^- (.+?)(?=^- |\Z)", match.group(1), re.M | re.S)
    out = []
    for bullet in bullets[:count]:
        flat = " ".join(bullet.split())
        bold = re.match(r"\*\*(.+?)\*\*", flat)
        sentence = bold.group(1) if bold else re.split(r"(?<=\.)\s", flat)[0]
        out.append(sentence if sentence.endswith(".") else sentence + ".")
    return out


def _pct(ratio: Any) -> str:
    return f"{(ratio - 1) * 100:+.1f} %" if isinstance(ratio, (int, float)) else "?"


def _cost(ctx: Context) -> str:
    data, problem = decision.read_input(decision.COST_PATH, "cost")
    entry = (data or {}).get("candidates", {}).get(RECOMMENDED)
    if entry is None:
        return f"Cost: {NOT_MEASURED}."
    parts = []
    for path, info in entry.get("paths", {}).items():
        ratio = info.get("ratio", {})
        ci = ratio.get("ci95") or ["?", "?"]
        parts.append(f"{path} {_pct(ratio.get('median'))} (CI {_pct(ci[0])} to "
                     f"{_pct(ci[1])})")
    target = data.get("target") or {}
    limit = target.get("max_overhead_percent")
    verdict = ""
    if limit is not None:
        verdict = (f" The target, at most {limit} % on any path, is "
                   + ("met." if target.get("met") else "**not met**."
                      if target.get("met") is False else "not decided."))
    link = page_url("decision", ctx.snapshot, "cost-per-request-overhead")
    return (f"[Cost]({link}) per request, median against unpatched FastAPI: "
            + "; ".join(parts) + "." + verdict)


def _compat(ctx: Context) -> tuple[list[str], Mapping[str, Any] | None]:
    data, problem = decision.read_input(decision.COMPAT_PATH, "compat")
    link = page_url("decision", ctx.snapshot, "compatibility-what-changes-for-existing-code")
    if data is None:
        return [f"Compatibility: {NOT_MEASURED}."], None
    shown = [n for n in (WARN_STEP, RECOMMENDED) if n in data.get("columns", [])]
    lines = [f"Apps whose outcome changes, from the [compatibility table]({link}):", ""]
    lines += ["| App | today | " + " | ".join(f"`{n}`" for n in shown) + " |",
              "| --- | --- | " + " | ".join("---" for _ in shown) + " |"]
    for key, row in data.get("rows", {}).items():
        cells = row.get("cells", {})
        base = cells.get("base", {}).get("label", "?")
        if not any((cells.get(n) or {}).get("changed") for n in shown):
            continue  # nothing changes for this app in either step
        vals = []
        for n in shown:
            cell = cells.get(n) or {}
            label = str(cell.get("label", "?"))
            if not cell.get("changed"):
                vals.append("same")
            elif n == WARN_STEP and label.startswith(base + " + "):
                vals.append("same, **warns**")  # the warning step adds only a signal
            else:
                vals.append(f"**changed**: {label}")
        desc = " ".join(str(row.get("description", key)).split()).replace("|", "/")
        lines.append(f"| {desc} | {base} | " + " | ".join(v.replace("|", "/") for v in vals)
                     + " |")
    return lines, data


def _options(ctx: Context) -> list[str]:
    lines = [f"- **Document only** (today's drop, docs PRs #15217, #15516, #15551): no code; "
             f"every conflict still loses the injected tasks "
             f"({clauses(('ATTACH-3', 'ATTACH-16'), ctx.snapshot)})."]
    for name in [n for n in OPTIONS if n in ctx.candidates]:
        cand = ctx.candidates[name]
        g = ctx.grade(name)
        if name not in ctx.results:
            said = NOT_MEASURED
        elif g.fails:
            said = "fails " + clauses(g.fails, ctx.snapshot)
        else:
            said = f"meets every measured requirement ({len(g.meets)} of {len(ctx.requirements)})"
        b = "?" if cand.copy_on_send is None else "copy-on-send" if cand.copy_on_send else "no"
        lines += [f"- {candidate(ctx, name)} — A: {cand.decision_a or '?'}; B: {b}. "
                  f"{said[:1].upper()}{said[1:]}."]
        code = code_lines(cand)
        if code:
            lines += ["", "  ```python", *[f"  {c}" for c in code], "  ```", ""]
    others = [n for n in ctx.order if n not in OPTIONS]
    if others:
        lines += ["", "The Decision page also grades "
                  + ", ".join(candidate(ctx, n) for n in others)
                  + ": variants that tell decision A from decision B apart, and the other "
                  "upstream merges."]
    return lines


def _traps(ctx: Context) -> list[str]:
    lines = []
    for name, what, named in TRAPS:
        ids = [c for c in named if c in ctx.snapshot.clause_by_id]
        fall = [n for n in ctx.order if set(ctx.grade(n).fails) & set(ids)]
        unmeasured = [n for n in ctx.order if n in ctx.results
                      and not set(ctx.grade(n).fails) & set(ids)
                      and set(ctx.grade(n).unmeasured) & set(ids)]
        who = ", ".join(candidate(ctx, n) for n in fall) or "no candidate"
        extra = (f"; not measured on {', '.join(md_code(n, 80) for n in unmeasured)}"
                 if unmeasured else "")
        lines.append(f"- **{name}** ({clauses(ids, ctx.snapshot)}): {what}. "
                     f"Falls in: {who}{extra}.")
    return lines


def _recommendation(ctx: Context, compat: Mapping[str, Any] | None) -> list[str]:
    snap = ctx.snapshot
    g = ctx.grade(RECOMMENDED)
    total = len(ctx.requirements)
    if RECOMMENDED not in ctx.results:
        measured = f"Its results are {NOT_MEASURED}."
    else:
        measured = (f"It meets {len(g.meets)} of {total} requirements"
                    + (f" and fails {clauses(g.fails, snap)}" if g.fails else "")
                    + (f"; {len(g.unmeasured)} {NOT_MEASURED}" if g.unmeasured else "") + ".")
    breaks = []
    if compat:
        for key, row in compat.get("rows", {}).items():
            cell = row.get("cells", {}).get(RECOMMENDED) or {}
            if cell.get("changed"):
                breaks.append(f"{' '.join(str(row.get('description', key)).split())} "
                              f"(`{cell.get('label', '?')}`)")
    total_apps = len((compat or {}).get("rows", {}))
    who = (f"It changes what {len(breaks)} of the {total_apps} compatibility apps observe "
           "(below).") if compat else f"Compatibility: {NOT_MEASURED}."
    return [
        f"**Merge without mutation** ({candidate(ctx, RECOMMENDED)}, "
        f"[the rule]({page_url('spec/resolution', snap, 'recommended')})): in the conflict "
        "FastAPI sends a shallow copy whose background awaits the injected `BackgroundTasks` "
        "(through its own `__call__`), then the Response's own in a `finally`; the user's "
        "Response is never changed; the identity case is sent as is; no warning. "
        f"{measured}",
        "",
        _cost(ctx),
        "",
        who,
    ]


def _migration(ctx: Context, compat: Mapping[str, Any] | None) -> list[str]:
    snap = ctx.snapshot
    warn = ctx.grade(WARN_STEP)
    rows = (compat or {}).get("rows", {})
    twice = [k for k, r in rows.items()
             if "twice" in str((r.get("cells", {}).get(RECOMMENDED) or {}).get("label", ""))]
    warned = [k for k in twice
              if "Warning" in str((rows[k]["cells"].get(WARN_STEP) or {}).get("label", ""))]
    unwarned = [k for k in twice if k not in warned]
    res3 = ("it emits no false warning (" + clause("RES-3", snap) + ")"
            if "RES-3" in warn.meets else "check " + clause("RES-3", snap))
    lines = [
        f"1. Release N: {candidate(ctx, WARN_STEP)}: a `UserWarning` and a `fastapi` log "
        f"record only when an injected task is really lost; {res3}.",
        f"2. Release N+1: {candidate(ctx, RECOMMENDED)}: the lost tasks run, the warning "
        "goes.",
        "3. Users who copied the injected tasks into their own background, or wrapped "
        "`BackgroundTask(bt)`, drop that workaround: under the merge those tasks run twice"
        + (f" (compat rows {', '.join(f'`{k}`' for k in twice)})" if twice else "") + ".",
    ]
    if unwarned:
        lines.append(f"   Step 1 does not warn {', '.join(f'`{k}`' for k in unwarned)}: "
                     "the release notes must name it.")
    return lines


def markdown(snapshot: model.Snapshot, ctx: Context | None = None) -> str:
    """The brief, as Markdown to paste into #11215."""
    ctx = ctx or decision.context(snapshot)
    compat_lines, compat = _compat(ctx)
    precedent = _sentences(decision.document_page("precedent"), "What this means for #11215", 3)
    usage = _sentences(decision.document_page("usage"), "What it means", 2)
    lines = [
        "## #11215: injected `BackgroundTasks` and a Response with its own background",
        "",
        f"*bgmatrix snapshot `{snapshot.id}`, spec {snapshot.spec_version}; evidence: "
        f"[the Decision page]({page_url('decision', snapshot)}).*",
        "",
        "Today FastAPI silently drops the injected tasks when the endpoint returns a Response "
        f"with its own background ({clauses(('ATTACH-3', 'ATTACH-16'), snapshot)}).",
        "",
        "### Recommendation",
        "",
        *_recommendation(ctx, compat),
        "",
        "### Options",
        "",
        "A is what happens in the conflict; B is copy-on-send (FastAPI stops assigning to the "
        "user's Response). The code each adds to `fastapi/routing.py`:",
        "",
        *_options(ctx),
        "",
        "### Traps measured",
        "",
        *_traps(ctx),
        "",
        "### Who is affected",
        "",
        *compat_lines,
        "",
        "### Precedent and usage",
        "",
        (" ".join(precedent) + f" ([precedent]({page_url('decision/precedent', snapshot)}))")
        if precedent else f"Precedent: {NOT_MEASURED}.",
        "",
        (" ".join(usage) + f" ([usage counts]({page_url('decision/usage', snapshot)}))")
        if usage else f"Usage: {NOT_MEASURED}.",
        "",
        "### Migration path",
        "",
        *_migration(ctx, compat),
    ]
    return "\n".join(lines).rstrip() + "\n"


def word_count(text: str) -> int:
    """Words a reader reads: code blocks are not prose, a link counts as its text."""
    prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    return len(re.findall(r"[\w`'’.-]*\w[\w`'’.-]*", prose))


def page(snapshot: model.Snapshot) -> str:
    """The brief as a site page (brief.md)."""
    text = markdown(snapshot)
    if not cite.site_url():
        # A local build has no public URL: its links lead from the site root, where this
        # page is, so they are made relative and work wherever the build is served.
        # As Markdown links between pages, so that mkdocs checks them (and rewrites them).
        text = re.sub(r"\]\(/?([^):#?]+)\.html", r"](\1.md", text)
    return ("# The brief\n\nOne page for FastAPI #11215, also printed by `bgmatrix brief` as "
            "Markdown to paste. Published, its links are absolute and pinned to this "
            "snapshot's own pages.\n\n" + text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=model.results.RESULTS_DIR,
                        help="the results folder (default: results/)")


def command(args: argparse.Namespace) -> int:
    """``bgmatrix brief``: print the brief."""
    snapshot = model.load_snapshot(args.results)
    print(markdown(snapshot), end="")
    return 0
