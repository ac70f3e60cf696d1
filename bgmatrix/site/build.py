"""``bgmatrix report``: spec/ and results/ become Markdown pages, exports, and a site.

    bgmatrix report [--results DIR] [--out site/generated] [--site-dir site/_build]
                    [--previous DIR] [--revalidate] [--no-build] [--rebuild]
                    [--publish] [--snapshots matrix/snapshots.json]

0. When nothing the site is made from has changed since the last build (``inputs_hash``:
   the checkout's files, the commit, the options, the environment's URLs, the tools), that
   build is kept as it is and the report ends there; ``--rebuild`` builds anyway, and a
   ``--publish`` build always builds.
1. Every result file is validated first; any invalid one stops the report (exit 2) with one
   line per file naming it and the problem, before anything is written. (Files whose exact
   bytes passed before are remembered under .bgmatrix/report/; ``--revalidate`` ignores that.)
2. The hand-written pages (site/docs/) and the generated ones go to a fresh temporary folder.
3. ``mkdocs build --strict`` (run in-process, with the config site/mkdocs.yml and that folder
   as its docs_dir) renders the site into another temporary folder. Raw results are not
   copied into it (75 MB of them made the site 151 MB): a published build links each result
   file in the repository at the commit that pins it (``cite.result_url``); a local build
   without that pin links results/<cell>.json beside the site, which it does not copy (serve
   the results folder there to follow those links). The report prints the built
   site's weight against its budgets (:data:`SITE_BUDGET`, :data:`HTML_BUDGET`,
   :data:`SEARCH_BUDGET`).
4. Only when all of that succeeded are they swapped in as site/generated/ and site/_build/, so
   a failed run leaves the previous site as it was: nothing is published half-built.

Changes are computed against the previous published snapshot (matrix/snapshots.json, read at
its commit) unless ``--previous`` names a folder. The site URL is ``$BGMATRIX_SITE_URL``
(:mod:`bgmatrix.site.cite`); without it a local build links relative to the site root.
``--publish`` (the deploy workflow's build) refuses a missing or placeholder URL or uncommitted
results, and after a successful build appends the snapshot to matrix/snapshots.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bgmatrix import files, spec
from bgmatrix.plan import store
from bgmatrix.site import (
    brief,
    cell_pages,
    changes,
    cite,
    decision,
    deployment,
    exports,
    fidelity,
    history,
    matrix,
    model,
    pages,
    releases,
    servers,
    suite,
)
from bgmatrix.spec import ROOT

SITE = ROOT / "site"
CONFIG = SITE / "mkdocs.yml"
HAND_WRITTEN = SITE / "docs"
GENERATED = SITE / "generated"
BUILD = SITE / "_build"
PAGE_LIMIT = 2 * 1024 * 1024  # bytes; a hard ceiling, even for hostile evidence
# The weight budgets of issue 15 (light and self-contained); the report warns past each.
SITE_BUDGET = 30 * 1024 * 1024  # the whole built site
HTML_BUDGET = 300 * 1024  # one HTML page
SEARCH_BUDGET = 500 * 1024  # search/search_index.json


def write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")  # strict: text that is not clean is a bug here


#: Fixed pages: home, matrix, decision, changes, history, downloads, the clause and cell index,
#: servers.
FIXED_PAGES = 9
PROGRESS_EVERY = 2.0  # seconds between progress lines while pages are generated


def page_total(snapshot: model.Snapshot) -> int:
    """How many pages :func:`generate` writes, known before it starts (for its progress)."""
    return (FIXED_PAGES + len(snapshot.clauses) + len(snapshot.results)
            + 1 + len(releases.releases(snapshot))  # releases/index.md and one per release
            + 1 + len(spec.CHAPTERS) + len(list(suite.SUITE_DIR.glob("test_*.py")))
            + 1 + len(spec.APART)  # deployment.md and the chapters measured apart
            + 1)  # fidelity.md


def generate(
    snapshot: model.Snapshot,
    out: Path,
    previous: changes.Previous | None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write every page and export into ``out`` (which must not exist); returns page count.

    ``progress(done, total)`` is called after each page."""
    shutil.copytree(HAND_WRITTEN, out)
    count = 0
    total = page_total(snapshot)

    def page(name: str, text: str) -> None:
        nonlocal count
        write(out / name, text)
        count += 1
        if progress is not None:
            progress(count, total)

    page("index.md", pages.home(snapshot))
    data = matrix.matrix_data(snapshot)
    page("matrix.md", pages.matrix_page(snapshot, data))
    page("decision.md", decision.decision(snapshot))
    for name, text in [*decision.extra_pages(snapshot), ("brief.md", brief.page(snapshot))]:
        write(out / name, text)
    diff = changes.compare(previous, snapshot)
    listed = history.published(snapshot)
    page("changes.md", pages.changes_page(snapshot, diff)
         + history.changes_section(snapshot, listed))
    page("history.md", history.page(snapshot, listed))

    export = exports.matrix_json(snapshot)
    # Compressed: 11 MB of text would be a third of the site's weight budget; gzip makes it
    # under 1 MB, and every tool that reads CSV or JSON reads them after one gunzip.
    for name, body in (("matrix.json", exports.dumps(export)),
                       ("matrix.csv", exports.matrix_csv(export))):
        write(out / "downloads" / f"{name}.gz", exports.gzipped(body))
    sizes = {p.name: p.stat().st_size for p in (out / "downloads").iterdir()}
    page("downloads.md", pages.downloads(snapshot, sizes))

    tests = suite.tests_by_clause(snapshot.results.values())
    page("clauses/index.md", pages.clauses_index(snapshot))
    for clause in snapshot.clauses:
        page(f"clauses/{clause.id}.md",
             pages.clause_page(snapshot, clause, tests.get(clause.id, [])))
    page("releases/index.md", releases.releases_index(snapshot))
    write(out / "releases" / "index.json", json.dumps(releases.index_data(snapshot, "../")))
    for version in releases.releases(snapshot):
        page(releases.page_name(version), releases.release_page(snapshot, version))
    cite_data = cell_pages.CiteData.of(snapshot)
    write(out / cell_pages.CITE_DATA_SCRIPT, cite_data.script())
    page("cells/index.md", cell_pages.cells_index(snapshot))
    for result in snapshot.cells():
        page(f"cells/{result['cell']['id']}.md",
             cell_pages.cell_page(snapshot, result, cite_data))
    for name in ("index", *spec.CHAPTERS):
        text = (spec.SPEC_DIR / f"{name}.md").read_text(encoding="utf-8")
        page(f"spec/{name}.md", pages.spec_chapter(snapshot, text))
    deployment.generate(page)  # deployment.md and spec/deployment.md (matrix/deployment.json)
    fidelity.generate(page, {r["cell"]["id"] for r in snapshot.cells()})  # fidelity.md
    page(servers.PAGE, servers.page(snapshot))  # matrix/server-probes.json
    for path in sorted(suite.SUITE_DIR.glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        page(f"suite/{path.stem}.md",
             pages.suite_page(path, source, suite.marks_by_test(tests, path.name),
                              {c.id for c in snapshot.clauses}))
    return count


class _Collect(logging.Handler):
    """Keeps mkdocs' warnings, so a strict failure can say what it was."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


#: Theme files this site's build never loads: lunr's support for languages other than English
#: with the Thai and Japanese word splitters (the search is configured for English only), and
#: the source maps of the theme's minified code (read only by a browser's developer tools).
#: They were 2.3 MB of the 30 MB weight budget.
UNUSED_THEME_FILES = ("assets/javascripts/lunr", "assets/**/*.map")


def prune_theme_files(site_dir: Path) -> None:
    for pattern in UNUSED_THEME_FILES:
        for path in site_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


# Elements whose text keeps its white space as it is: left untouched by ``compact_page``.
_KEEP_SPACE = re.compile(r"(<pre\b.*?</pre>|<textarea\b.*?</textarea>|<script\b.*?</script>)",
                         re.S | re.I)
_INDENT = re.compile(r"\n\s+")
_SCRIPT = re.compile(r"(<script\b.*?</script>|<style\b.*?</style>)", re.S | re.I)
#: The references ``markup.esc`` writes for Markdown's sake only (``-`` is ``&#45;``): every
#: character Markdown gives a meaning that HTML does not. ``& < > " '`` and the white space
#: stay references, so no text can become markup, close an attribute or change a line.
_MARKDOWN_ONLY = {f"&#{ord(ch)};": ch for ch in "`*_{}[]()#+-!|~\\"}
_MARKDOWN_REFS = re.compile("|".join(re.escape(ref) for ref in _MARKDOWN_ONLY))


def _plain(part: str) -> str:
    return _MARKDOWN_REFS.sub(lambda m: _MARKDOWN_ONLY[m.group()], part)


def compact_page(html: str) -> str:
    """A built page, lighter, exactly as a browser shows it. Applied to each page as mkdocs
    renders it (site/hooks.py), before it is written:

    - The theme's templates indent every line; a run of white space that starts a line
      becomes one line break. Outside <pre>, <textarea> and <script> a browser renders any run
      of white space as one space, so every page looks as before, a tenth lighter.
    - Markdown has read the page by then, so the references that only kept evidence text
      from Markdown (``markup.esc``) become their characters again (``ATTACH&#45;3`` is
      ``ATTACH-3``): a browser reads both as the same text, in element content and in
      attribute values alike. Script and style elements are left alone (a browser does not
      decode references there). They were 1.4 MB of the site.
    """
    parts = _KEEP_SPACE.split(html)
    parts[::2] = [_INDENT.sub("\n", part) for part in parts[::2]]
    parts = _SCRIPT.split("".join(parts))
    parts[::2] = [_plain(part) for part in parts[::2]]
    return "".join(parts)


def build_site(docs_dir: Path, site_dir: Path, config: Path = CONFIG) -> None:
    """``mkdocs build --strict -f site/mkdocs.yml``, in-process so docs_dir can point at the
    temporary folder (the CLI cannot override it) and to save an interpreter start."""
    from mkdocs.commands import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import MkDocsException

    collect = _Collect()
    logger = logging.getLogger("mkdocs")
    logger.addHandler(collect)
    try:
        cfg = load_config(str(config), docs_dir=str(docs_dir), site_dir=str(site_dir),
                          site_url=cite.site_url() or "",
                          strict=True)
        cfg.plugins.on_startup(command="build", dirty=False)
        search = [p for name, p in cfg.plugins.items() if name.split("/")[-1] == "search"]
        if any(p.config.lang not in (None, ["en"]) for p in search):
            raise model.ReportError("site/mkdocs.yml: the search is configured for a language "
                                    "other than English, whose files the build prunes")
        try:
            mkdocs_build.build(cfg)
        finally:
            cfg.plugins.on_shutdown()
        prune_theme_files(site_dir)
    except (MkDocsException, SystemExit) as exc:
        first = collect.messages[0] if collect.messages else str(exc)
        more = f" (and {len(collect.messages) - 1} more warnings)" if len(collect.messages) > 1 \
            else ""
        raise model.ReportError(f"mkdocs build --strict failed: {first}{more}") from None
    finally:
        logger.removeHandler(collect)


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final`` (same file system, so the swap is a rename), removed
    unless it was published."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with files.interrupts_held():  # a Ctrl-C between the two would leave the folder behind
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        yield tmp / "new"
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def publish(new: Path, final: Path) -> None:
    """Replace ``final`` by ``new`` with two renames; the old copy is deleted afterwards."""
    old = new.parent / "old"
    with files.interrupts_held():  # between the renames there is no build at all
        if final.exists():
            final.rename(old)
        new.rename(final)


def largest_page(site_dir: Path) -> tuple[int, Path | None]:
    sizes = [(p.stat().st_size, p) for p in site_dir.rglob("*.html")]
    return max(sizes, default=(0, None))


def weight(site_dir: Path) -> dict[str, int]:
    """The built site's weight: total bytes, the largest HTML page, the search index."""
    index = site_dir / "search" / "search_index.json"
    return {
        "total": sum(p.stat().st_size for p in site_dir.rglob("*") if p.is_file()),
        "largest_page": largest_page(site_dir)[0],
        "search_index": index.stat().st_size if index.is_file() else 0,
    }


def over_budget(site_dir: Path) -> list[str]:
    """One line per budget the built site exceeds (empty when it is light enough)."""
    w = weight(site_dir)
    out = []
    if w["total"] > SITE_BUDGET:
        out.append(f"the site is {w['total'] / 2**20:.1f} MB, over {SITE_BUDGET // 2**20} MB")
    pages = sorted((p.stat().st_size, p) for p in site_dir.rglob("*.html")
                   if p.stat().st_size > HTML_BUDGET)
    if pages:
        out.append(f"{len(pages)} HTML pages over {HTML_BUDGET // 1024} KB, the largest "
                   f"{pages[-1][1].relative_to(site_dir)} ({pages[-1][0] / 1024:,.0f} KB)")
    if w["search_index"] > SEARCH_BUDGET:
        out.append(f"the search index is {w['search_index'] / 1024:,.0f} KB, over "
                   f"{SEARCH_BUDGET // 1024} KB")
    return out


class Progress:
    """Prints ``pages done of total`` and the time left at most every :data:`PROGRESS_EVERY`
    seconds, and once at the end, so a long generation shows it is moving."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - self.last >= PROGRESS_EVERY:
            self.last = now
            left = (now - self.started) / done * (total - done) if done else 0.0
            tail = f", about {left:.0f} s left" if done < total else ""
            print(f"report: generating pages: {done} of {total}{tail}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=model.results.RESULTS_DIR,
                        help="results folder (default: results/)")
    parser.add_argument("--plan", type=Path, default=store.PLAN_PATH,
                        help="the plan results are checked against (default matrix/plan.json)")
    parser.add_argument("--out", type=Path, default=GENERATED,
                        help="where the generated pages go (default: site/generated)")
    parser.add_argument("--site-dir", type=Path, default=BUILD,
                        help="where the built site goes (default: site/_build)")
    parser.add_argument("--previous", type=Path, default=None,
                        help="results folder to compare with (default: the previous published "
                             "snapshot, read through git)")
    parser.add_argument("--publish", action="store_true",
                        help="a build to deploy: refuse a missing or placeholder site URL or "
                             "uncommitted results; record the snapshot in --snapshots")
    parser.add_argument("--snapshots", type=Path, default=history.SNAPSHOTS_PATH,
                        help="the list of published snapshots (default: matrix/snapshots.json)")
    parser.add_argument("--revalidate", action="store_true",
                        help="validate every result file, ignoring the record of files that "
                             "passed before")
    parser.add_argument("--no-build", action="store_true",
                        help="generate the pages only, without running mkdocs")
    parser.add_argument("--rebuild", action="store_true",
                        help="build even when nothing the site is made from has changed since "
                             "the last build (which is otherwise kept as it is)")


#: Written into the generated folder and the built site: the hash of every input of the
#: build that made them (``inputs_hash``). A dot file, so mkdocs neither renders nor copies it.
INPUTS_FILE = ".bgmatrix-inputs"
_ENV = ("BGMATRIX_SITE_URL", "BGMATRIX_REPO_URL")


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def inputs_hash(args: argparse.Namespace) -> str | None:
    """One hash over everything a build reads: every file of the checkout that git does not
    ignore (code, templates, spec, results, candidates, the plan and the snapshot list), the
    folders the arguments name when they are elsewhere, the git commit (citations pin it),
    the environment's site and repository URLs, the options, and the site tools' versions.
    None when the checkout is not a git work tree: then nothing is ever reused.

    Deliberately coarse: any change anywhere in the checkout rebuilds everything. The point is
    the common case, a report run again with nothing changed, which then costs a hash instead
    of a build."""
    from importlib.metadata import version

    try:
        def git(*cmd: str) -> bytes:
            return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True,
                                  check=True, timeout=60).stdout

        head = git("rev-parse", "HEAD")
        listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    except (OSError, subprocess.SubprocessError):
        return None
    h = hashlib.sha256(head)
    sources = [ROOT / n for n in sorted(set(listed.decode("utf-8", "surrogateescape")
                                            .split("\0")) - {""})]
    for extra in (args.results, args.plan, args.previous, args.snapshots):
        if extra is None:
            continue
        extra = Path(extra).resolve()
        if ROOT in extra.parents or extra == ROOT:
            continue  # listed above
        sources += _folder_files(extra) if extra.is_dir() else [extra]
    for path in sources:
        h.update(str(path).encode("utf-8", "surrogateescape") + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:  # deleted but still listed, or unreadable: a state of its own
            h.update(b"-")
    for name in _ENV:
        h.update(f"{name}={os.environ.get(name)}\0".encode())
    # The options as typed (the CLI adds its handler function, whose repr differs per run).
    options = {k: str(v) for k, v in sorted(vars(args).items())
               if k != "rebuild" and (v is None or isinstance(v, (str, bool, int, Path)))}
    h.update(json.dumps(options, sort_keys=True).encode())
    h.update(" ".join(version(d) for d in ("mkdocs", "mkdocs-material", "jinja2")).encode())
    return h.hexdigest()


def reusable(args: argparse.Namespace, inputs: str) -> bool:
    """The previous build was made from exactly these inputs and is still in place."""
    if args.rebuild or args.publish:
        return False
    folders = [args.out] if args.no_build else [args.out, args.site_dir]
    for folder in folders:
        try:
            if (folder / INPUTS_FILE).read_text(encoding="utf-8").strip() != inputs:
                return False
        except (OSError, UnicodeDecodeError):
            return False
    return True


def command(args: argparse.Namespace) -> int:
    """``bgmatrix report``: validate, generate, build, then publish all at once."""
    started = time.perf_counter()
    inputs = inputs_hash(args)
    if inputs is not None and reusable(args, inputs):
        print(f"report: nothing the site is made from changed since the last build (inputs "
              f"{inputs[:12]}): {args.site_dir if not args.no_build else args.out} is kept "
              f"as it is ({time.perf_counter() - started:.1f} s; --rebuild to build anyway)",
              flush=True)
        return 0
    print(f"report: reading {args.results} ...", flush=True)
    snapshot = model.load_snapshot(args.results, plan_path=args.plan,
                                   use_cache=not args.revalidate)
    pin = cite.locate(snapshot, args.results)
    if args.publish:
        cite.check_publishable(snapshot)
    elif cite.site_url() is None:
        print(f"report: {cite.SITE_URL_ENV} is not set: a local build, its links relative to "
              "the site root (citations are pinned only in a published build)", flush=True)
    # Publishing: the pages already list this snapshot as published (it is recorded below).
    listed = history.attach(snapshot, args.snapshots, publishing=args.publish)
    previous: changes.Previous | None = None
    if args.previous is not None:
        if not args.previous.is_dir():
            raise model.ReportError(f"{args.previous}: --previous is not a folder")
        previous = changes.from_folder(args.previous)
    elif (before := history.previous(snapshot, listed)) is not None and pin.toplevel:
        previous = changes.from_published(before.id, before.commit, pin.toplevel, pin.folder)
    print(f"report: {len(snapshot.results)} results read in "
          f"{time.perf_counter() - started:.1f} s; generating pages ...", flush=True)
    with staging(args.out) as gen_dir, staging(args.site_dir) as site_dir:
        read = time.perf_counter()
        pages = generate(snapshot, gen_dir, previous, progress=Progress())
        generated = time.perf_counter()
        print(f"report: snapshot {snapshot.id}: {pages} pages generated in "
              f"{generated - read:.1f} s"
              + ("" if args.no_build else "; building the site with mkdocs ..."), flush=True)
        if not args.no_build:
            build_site(gen_dir, site_dir)
        built = time.perf_counter()
        for folder in (gen_dir, site_dir):
            if inputs is not None and folder.is_dir():  # written last: a whole build's mark
                (folder / INPUTS_FILE).write_text(inputs + "\n", encoding="utf-8")
        publish(gen_dir, args.out)
        if not args.no_build:
            publish(site_dir, args.site_dir)
    if args.publish and not args.no_build and history.record(
            history.summarise(snapshot, pin.commit or ""), args.snapshots):
        print(f"report: snapshot {snapshot.id} (commit {pin.commit}) added to "
              f"{args.snapshots}", flush=True)
    done = time.perf_counter()
    if args.no_build:
        print(f"report: pages in {args.out}")
        return 0
    size, path = largest_page(args.site_dir)
    print(f"report: site built in {done - generated:.1f} s: {args.site_dir / 'index.html'} "
          f"(largest page {size / 1024:,.0f} KB)")
    # mkdocs is timed alone: the swap and the removal of the previous build are neither
    # generation nor mkdocs (the ratio is issue 15's target: at most 0.5).
    preparing, mkdocs = generated - started, built - generated
    print(f"report: time: reading {read - started:.1f} s, generation {generated - read:.1f} s, "
          f"mkdocs {mkdocs:.1f} s, swap and clean-up {done - built:.1f} s; reading + "
          f"generation = {preparing / mkdocs if mkdocs else 0:.2f} x mkdocs", flush=True)
    w = weight(args.site_dir)
    print(f"report: weight: {w['total'] / 2**20:.1f} MB in all, largest page "
          f"{w['largest_page'] / 1024:,.0f} KB, search index {w['search_index'] / 1024:,.0f} KB",
          flush=True)
    for problem in over_budget(args.site_dir):
        print(f"report: warning: {problem}", file=sys.stderr)
    if size > PAGE_LIMIT:
        print(f"report: warning: {path} is over {PAGE_LIMIT // (1024 * 1024)} MB",
              file=sys.stderr)
    return 0
