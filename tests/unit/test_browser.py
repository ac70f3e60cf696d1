"""The built site in a real browser: headless Chromium (Debian's package) against a local server.

Checks that the home page, the matrix, a filtered-matrix link, a clause page and a cell page
render with their data once their JavaScript has run, that the citation text is there, and that
every internal link of the built site resolves. Screenshots go to site/_screens/ for a person
to look at. Where Chromium is not installed the rendering tests skip, saying why; the link
crawl, which reads the built files, runs anyway.

The site is built from the committed results when there are any (so the screenshots show real
data), otherwise from synthetic results.
"""

from __future__ import annotations

import functools
import html
import posixpath
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from bgmatrix import cli
from bgmatrix.site import cite, model
from bgmatrix.spec import ROOT
from tests.unit.test_report import synthetic_results, write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENS = ROOT / "site" / "_screens"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
# Virtual time lets the page's scripts run to completion before the DOM is dumped, without
# a fixed sleep.
SETTLE = "--virtual-time-budget=5000"

NO_CHROMIUM = "headless Chromium is not installed (Debian: apt-get install -y chromium)"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, model.Snapshot]:
    tmp = tmp_path_factory.mktemp("browser")
    committed = model.results.RESULTS_DIR
    if any(committed.glob("*.json")):
        # A copy: sweeps may be writing results/ while the test runs.
        results_dir = tmp / "results"
        shutil.copytree(committed, results_dir)
    else:
        results_dir = write_results(tmp / "results", synthetic_results(stride=9, fail_every=11))
    site = tmp / "site"
    (tmp / "previous").mkdir()
    code = cli.main(["report", "--results", str(results_dir), "--out", str(tmp / "gen"),
                        "--site-dir", str(site), "--previous", str(tmp / "previous")])
    assert code == 0, "the report failed; run `bgmatrix report` for the message"
    return site, model.load_snapshot(results_dir)


@pytest.fixture(scope="module")
def server(built):
    site, _ = built
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class Browser:
    """One headless Chromium run per call, all sharing a throw-away profile."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile

    def run(self, url: str, *args: str) -> str:
        proc = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", SETTLE, *args, url],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    def dom(self, url: str) -> str:
        """The DOM after the page's scripts ran."""
        return self.run(url, "--dump-dom")

    def screenshot(self, url: str, name: str, height: int = 1100) -> Path:
        path = SCREENS / name
        path.unlink(missing_ok=True)
        self.run(url, f"--screenshot={path}", f"--window-size=1400,{height}",
                 "--hide-scrollbars")
        assert path.is_file() and path.stat().st_size > 10_000, f"no screenshot at {path}"
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Browser:
    if CHROMIUM is None:  # only the tests that render pages need it; the link crawl does not
        pytest.skip(NO_CHROMIUM)
    SCREENS.mkdir(parents=True, exist_ok=True)
    return Browser(tmp_path_factory.mktemp("chromium-profile"))


class _Text(HTMLParser):
    """Text of the page and of elements by id (citation blocks, the matrix summary)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.by_id: dict[str, list[str]] = {}
        self.attrs_by_id: dict[str, dict[str, str | None]] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, name, attrs):
        attrs_d = dict(attrs)
        if name in ("br", "img", "input", "meta", "link", "hr", "source", "wbr"):
            return
        ident = attrs_d.get("id")
        if ident:
            self.attrs_by_id[ident] = attrs_d
            self.by_id.setdefault(ident, [])
        self._open.append(ident)

    def handle_endtag(self, name):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        self.text.append(data)
        for ident in self._open:
            if ident:
                self.by_id[ident].append(data)

    def of(self, ident: str) -> str:
        return "".join(self.by_id.get(ident, []))


def parse(dom: str) -> _Text:
    page = _Text()
    page.feed(dom)
    return page


def test_home_answers_the_headline_questions_with_a_wall(built, server, browser):
    _, snapshot = built
    page = parse(browser.dom(server + "index.html"))
    text = "".join(page.text)
    assert "Do injected tasks survive a Response with its own background?" in text
    assert page.of("bgm-wall"), "the wall has no tiles"
    assert snapshot.id in text or not snapshot.results
    browser.screenshot(server + "index.html", "home.png", 1600)


def test_the_matrix_draws_its_data(built, server, browser):
    _, snapshot = built
    dom = browser.dom(server + "matrix.html")
    page = parse(dom)
    holder = page.attrs_by_id["bgm-matrix"]
    assert int(holder.get("data-rendered") or 0) > 0, "matrix.js drew no rows"
    summary = page.of("bgm-summary")
    assert f"of {len(snapshot.results)} cells" in summary
    assert f"{len(snapshot.clauses)} of {len(snapshot.clauses)} clauses" in summary
    assert 'href="clauses/ATTACH-3.html"' in dom and 'href="cells/' in dom
    browser.screenshot(server + "matrix.html", "matrix.png")


def test_a_filtered_matrix_link_opens_the_filtered_view(built, server, browser):
    _, snapshot = built
    label = model.outcome(next(iter(snapshot.cells())), "ATTACH-3")[1] or "drop"
    url = f"{server}matrix.html#clause=ATTACH-3,ATTACH-4&behaviour={label}"
    dom = browser.dom(url)
    page = parse(dom)
    summary = page.of("bgm-summary")
    assert f"2 of {len(snapshot.clauses)} clauses" in summary, summary
    assert int(page.attrs_by_id["bgm-matrix"].get("data-rendered") or 0) > 0
    grid = dom[dom.index('class="bgm-grid"'):]
    assert 'href="clauses/ATTACH-3.html"' in grid and 'href="clauses/ATTACH-5.html"' not in grid
    # the form shows the filters it was opened with
    assert 'value="ATTACH-3,ATTACH-4"' in dom or "ATTACH-3,ATTACH-4" in dom
    browser.screenshot(url, "matrix-filtered.png")


def test_a_clause_page_has_its_timeline_and_citation(built, server, browser):
    _, snapshot = built
    page = parse(browser.dom(server + "clauses/ATTACH-3.html"))
    text = "".join(page.text)
    assert "Spec text" in text and "Tests that check it" in text
    assert "Timeline across FastAPI releases" in text
    assert page.of("bgm-cite-text").strip() == cite.clause_markdown(snapshot, "ATTACH-3")
    browser.screenshot(server + "clauses/ATTACH-3.html", "clause-ATTACH-3.png", 1600)


def test_a_cell_page_has_evidence_verdicts_provenance_and_citation(built, server, browser):
    _, snapshot = built
    result = next(r for r in snapshot.cells() if r["state"] == "ok")
    cid = result["cell"]["id"]
    page = parse(browser.dom(f"{server}cells/{cid}.html"))
    text = "".join(page.text)
    for heading in ("Verdicts", "Observations", "Provenance", "event log ("):
        assert heading in text, heading
    expected = cite.cell_markdown(snapshot, cite.default_clause(snapshot, result), cid)
    assert page.of("bgm-cite-text").strip() == expected
    assert "raw result (JSON)" in text
    browser.screenshot(f"{server}cells/{cid}.html", "cell.png", 1600)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, name, attrs):
        for key, value in attrs:
            if key == "id" and value:
                self.ids.add(value)
            if key == "name" and name == "a" and value:
                self.ids.add(value)
            if (key == "href" and name in ("a", "link")) or (key == "src" and name in (
                    "script", "img")):
                if value:
                    self.links.append(value)


def test_every_internal_link_resolves(built):
    """Crawls every built page: each relative link names a file that exists, and each
    ``#fragment`` an id on the target page (matrix filters like ``#clause=...`` excepted)."""
    site, _ = built
    pages = {p.relative_to(site).as_posix(): p for p in site.rglob("*.html")}
    parsed: dict[str, _Links] = {}

    def links_of(rel: str) -> _Links:
        if rel not in parsed:
            parser = _Links()
            parser.feed(pages[rel].read_text(encoding="utf-8"))
            parsed[rel] = parser
        return parsed[rel]

    broken = []
    for rel in sorted(pages):
        for href in links_of(rel).links:
            parts = urlsplit(html.unescape(href))
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "data:")):
                continue  # external (the theme's own links), not ours to resolve
            path = unquote(parts.path)
            if path.startswith("/"):  # root-absolute (the theme's 404 page): under site_url
                base = urlsplit(cite.base_url()).path
                target = path[len(base):] if path.startswith(base) else path.lstrip("/")
            elif path:
                target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), path))
            else:
                target = rel
            if target.endswith("/") or (site / target).is_dir():
                target = posixpath.join(target, "index.html")
            if not (site / target).exists():
                broken.append(f"{rel}: {href} (no {target})")
                continue
            frag = parts.fragment
            if frag and "=" not in frag and target.endswith(".html") and target in pages:
                if frag not in links_of(target).ids:
                    broken.append(f"{rel}: {href} (no id {frag!r} in {target})")
    assert not broken, f"{len(broken)} broken links, e.g.:\n" + "\n".join(broken[:20])

