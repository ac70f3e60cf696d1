"""The built site in a real browser, used the way a person uses it: headless Chromium (Debian's
chromium and chromium-driver) driven by Selenium against a local server.

Looks at the home page, the matrix (drawn, filtered by choosing a behaviour, a range expanded
without losing the scroll position, an unknown clause named), a clause page (its citation copied
to the clipboard, and the citation's links followed), a cell page and the Decision page at
1400 px and 420 px (nothing cut off at the edge, no column a character wide), and crawls every
internal link of the built site. Screenshots of each page type at both widths go to
site/_screens/ for a person to look at. Where Chromium is not installed the rendering tests skip,
saying why; the link crawl, which reads the built files, runs anyway. Shared pieces (the build,
the server, the driver) are in tests/unit/site_browser.py; the axe check is test_a11y.py.
"""

from __future__ import annotations

import html
import json
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from bgmatrix.site import cite, matrix, model
from bgmatrix.site.markup import clean
from tests.unit.site_browser import WIDTHS, browser_session, built_site, parse, serve


@pytest.fixture(scope="module")
def built() -> tuple[Path, model.Snapshot]:
    return built_site()


@pytest.fixture(scope="module")
def server(built):
    with serve(built[0]) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    yield from browser_session()  # only the rendering tests need it


def test_home_answers_the_headline_questions_with_a_wall(built, server, browser):
    _, snapshot = built
    page = parse(browser.dom(server + "index.html"))
    text = "".join(page.text)
    assert "Do injected tasks survive a Response with its own background?" in text
    assert page.of("bgm-wall"), "the wall has no tiles"
    assert snapshot.id in text or not snapshot.results
    browser.screenshots(server + "index.html", "home", 1600)


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
    browser.screenshots(server + "matrix.html", "matrix")


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
    browser.screenshots(url, "matrix-filtered")


def test_a_clause_page_has_its_timeline_and_citation(built, server, browser):
    _, snapshot = built
    page = parse(browser.dom(server + "clauses/ATTACH-3.html"))
    text = "".join(page.text)
    assert "Spec text" in text and "Tests that check it" in text
    assert "Timeline across FastAPI releases" in text
    assert page.of("bgm-cite-text").strip() == cite.clause_markdown(snapshot, "ATTACH-3")
    browser.screenshots(server + "clauses/ATTACH-3.html", "clause", 1600)


def test_a_cell_page_has_evidence_verdicts_provenance_and_citation(built, server, browser):
    _, snapshot = built
    result = next(r for r in snapshot.cells() if r["state"] == "ok")
    cid = result["cell"]["id"]
    page = parse(browser.dom(f"{server}cells/{cid}.html"))
    text = "".join(page.text)
    for heading in ("Verdicts", "Evidence", "Provenance", "event log ("):
        assert heading in text, heading
    expected = cite.cell_markdown(snapshot, cite.default_clause(snapshot, result), cid)
    assert page.of("bgm-cite-text").strip() == expected
    assert "raw result (JSON)" in text
    browser.screenshots(f"{server}cells/{cid}.html", "cell", 1600)


def test_the_matrix_reads_without_a_legend(built, server, browser):
    """A glyph and a word in every cell; one FastAPI section, Starlette as a column."""
    browser.open(server + "matrix.html")
    cells = browser.js("return Array.from(document.querySelectorAll('td.bgm-o'))"
                       ".slice(0, 400).map(function (td) { return td.textContent; });")
    assert cells and all(re.match(r"^[✓✗–!·] \S", c) for c in cells), cells[:5]
    sections = browser.js("return Array.from(document.querySelectorAll('tr.bgm-section'))"
                          ".map(function (tr) { return tr.textContent; });")
    assert not any("Starlette 0." in s for s in sections), sections
    heads = browser.js("return Array.from(document.querySelectorAll('.bgm-grid thead th'))"
                       ".slice(0, 2).map(function (th) { return th.textContent; });")
    assert heads == ["Release", "Starlette"]
    # The header row stays in view while the grid scrolls.
    assert browser.js("return getComputedStyle(document.querySelector("
                      "'.bgm-grid thead th')).position;") == "sticky"


def test_filter_the_matrix_by_choosing_a_behaviour(built, server, browser):
    from selenium.webdriver.support.ui import Select

    _, snapshot = built
    browser.open(server + "matrix.html")
    select = Select(browser.driver.find_element("name", "behaviour"))
    options = [o.get_attribute("value") for o in select.options]
    # Whole labels, never fragments split on spaces: every option is a verdict, a word or a
    # label exactly as some result spells it.
    labels = {clean(model.outcome(r, cid)[1], matrix.LABEL_LIMIT)  # as the page data has them
              for r in snapshot.results.values() for cid in r.get("clauses", {})}
    assert "drop" in options
    assert any(" " in o for o in options), "no multi-word label offered whole"
    fragments = [o for o in options if ":" in o and o not in labels]
    assert not fragments, fragments[:5]
    before = browser.js("return document.getElementById('bgm-summary').textContent;")
    select.select_by_value("drop")
    after = browser.js("return document.getElementById('bgm-summary').textContent;")
    assert after != before and "behaviour=drop" in browser.driver.current_url
    shown = int(re.search(r"Showing (\d+) of", after).group(1))
    assert 0 < shown < len(snapshot.results)


def test_an_unknown_clause_in_the_url_says_so(built, server, browser):
    browser.open(server + "matrix.html#clause=NOPE-9,ATTACH-3")
    notice = browser.js("var n = document.getElementById('bgm-unknown');"
                        "return n ? n.textContent : '';")
    assert "NOPE-9" in notice
    summary = browser.js("return document.getElementById('bgm-summary').textContent;")
    assert " 1 of " in summary  # ATTACH-3 still shown


def test_expanding_a_range_keeps_the_scroll_position(built, server, browser):
    browser.open(server + "matrix.html", height=900)
    count = browser.js("return document.querySelectorAll('tr.bgm-range button').length;")
    assert count, "no folded range to expand"
    # A range well down the grid: scroll the page to the grid, then the grid to the button.
    key = browser.js("""
        var buttons = document.querySelectorAll('tr.bgm-range button');
        var b = buttons[Math.floor(buttons.length / 2)];
        var grid = document.querySelector('.bgm-scroll');
        window.scrollTo(0, grid.getBoundingClientRect().top + window.scrollY - 10);
        grid.scrollTop = b.closest('tr').offsetTop - 200;
        return b.getAttribute('data-key');""")
    where = "var b = document.querySelector('button[data-key=\"' + arguments[0] + '\"]');"
    before = browser.js(where + "return [window.scrollY, document.querySelector('.bgm-scroll')"
                        ".scrollTop, b.getBoundingClientRect().top];", key)
    browser.js(where + "b.click();", key)
    after = browser.js(where + "return [window.scrollY, document.querySelector('.bgm-scroll')"
                       ".scrollTop, b.getBoundingClientRect().top, "
                       "b.getAttribute('aria-expanded'), document.activeElement === b];", key)
    assert after[3] == "true" and after[4], after
    assert before[1] > 0, "the grid did not scroll: the check would prove nothing"
    assert abs(after[0] - before[0]) <= 2 and abs(after[1] - before[1]) <= 2, (before, after)
    assert abs(after[2] - before[2]) <= 2, (before, after)
    members = browser.js("return document.querySelectorAll('tr.bgm-member').length;")
    assert members >= 2


def _citation_links(markdown: str) -> list[str]:
    return re.findall(r"\]\((\S+?)\)", markdown)


def test_copy_a_citation_and_follow_its_links(built, server, browser):
    site, snapshot = built
    browser.open(server + "clauses/ATTACH-3.html")
    browser.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": server.rstrip("/"),
        "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    browser.driver.find_element("css selector", ".bgm-copy").click()
    copied = browser.driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "setTimeout(function () { navigator.clipboard.readText().then(done,"
        " function (e) { done('clipboard refused: ' + e); }); }, 200);")
    shown = browser.js("return document.getElementById('bgm-cite-text').textContent;")
    assert copied == shown.strip() or copied == shown, copied
    assert snapshot.id in copied
    # Follow every link of the citation: pages of the site open here; a raw result file is
    # served by the repository (it is not copied into the site): it must exist in results/.
    base = cite.base_url()
    links = _citation_links(copied)
    assert links, copied
    for url in links:
        path = url[len(base):] if base and url.startswith(base) else url
        path = urlsplit(path).path.lstrip("/")
        if re.search(r"(^|/)results/[^/]+\.json$", path):
            assert (model.results.RESULTS_DIR / Path(path).name).is_file() or \
                snapshot.results, url
            continue
        if urlsplit(path).scheme:  # pinned links to the repository: not this site's to open
            continue
        browser.open(server + path)
        title = browser.driver.title
        assert "404" not in title and browser.js("return document.querySelector('h1') !== null;"), \
            f"{url} did not open a page"


def test_the_decision_page_reads_at_both_widths(built, server, browser):
    """Nothing cut off at the page's edge, nothing truncated by CSS, no table column squeezed
    to a character a line (a cell wider than its text's longest word is fine)."""
    problems = []
    for width in WIDTHS:
        browser.open(server + "decision.html", width, 1100)
        found = browser.js(r"""
            var out = [];
            var doc = document.documentElement;
            if (doc.scrollWidth > window.innerWidth + 1) {
              out.push('page scrolls sideways: ' + doc.scrollWidth + ' > ' + window.innerWidth);
            }
            document.querySelectorAll('.md-content td, .md-content th').forEach(function (c) {
              var text = c.textContent.trim();
              if (!text) { return; }
              var style = getComputedStyle(c);
              if (style.textOverflow === 'ellipsis' && c.scrollWidth > c.clientWidth) {
                out.push('truncated: ' + text.slice(0, 40));
              }
              /* A column squeezed to a character or two a line: narrower than 2.5 em while
               * holding a word of 4 letters or more. */
              var longest = Math.max.apply(null, text.split(/\s+/).map(function (w) {
                return w.length; }));
              if (longest >= 4 && c.clientWidth < parseFloat(style.fontSize) * 2.5) {
                out.push('a character a line: ' + text.slice(0, 40));
              }
            });
            return out;""")
        problems += [f"{width} px: {p}" for p in found]
    browser.screenshots(server + "decision.html", "decision", 1600)
    assert not problems, "\n".join(problems[:20])


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
            if re.fullmatch(r"results/[^/]+\.json", target):
                continue  # raw results are served by the repository, not copied into the site
            if not (site / target).exists():
                broken.append(f"{rel}: {href} (no {target})")
                continue
            frag = parts.fragment
            if frag and "=" not in frag and target.endswith(".html") and target in pages:
                if frag not in links_of(target).ids:
                    broken.append(f"{rel}: {href} (no id {frag!r} in {target})")
    assert not broken, f"{len(broken)} broken links, e.g.:\n" + "\n".join(broken[:20])



# ---------------------------------------------------------------------------------------------
# "Is my version affected?", the wall switch, a cell page's clause picker (issue 15, 1/2/5)


def _most_hazardous(snapshot: model.Snapshot) -> tuple[str, list[str]]:
    from bgmatrix.site import releases

    data = releases.index_data(snapshot)["releases"]
    version = max(data, key=lambda v: (len(data[v]["hazards"]), model.version_key(v)))
    return version, data[version]["hazards"]


def test_look_a_version_up_in_the_version_box(built, server, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    _, snapshot = built
    version, hazards = _most_hazardous(snapshot)
    browser.open(server + "index.html")
    box = browser.driver.find_element("id", "bgm-version-fastapi")
    box.send_keys("9.99.9")
    box.submit()
    answer = browser.js("return document.getElementById('bgm-version-answer').textContent;")
    assert "9.99.9 is not a release this site knows" in answer
    assert browser.driver.current_url.startswith(server + "index.html")
    box.clear()
    box.send_keys(version)
    box.submit()
    WebDriverWait(browser.driver, 30).until(
        lambda d: d.current_url.startswith(f"{server}releases/{version}.html"))
    WebDriverWait(browser.driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    assert f"FastAPI {version}" in browser.driver.title
    shown = browser.js("return Array.from(document.querySelectorAll('.bgm-hazard a'))"
                       ".map(function (a) { return a.textContent; });")
    assert set(hazards) <= set(shown)  # every hazard links to its clause
    assert browser.js("return document.querySelectorAll('pre.bgm-snippet').length;")
    browser.screenshots(f"{server}releases/{version}.html", "release", 1600)


def test_a_release_page_is_in_the_search_index(built):
    site, snapshot = built
    version, _ = _most_hazardous(snapshot)
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    entry = next(d for d in index["docs"] if d["location"] == f"releases/{version}.html")
    assert entry["title"] == f"FastAPI {version}" and version in entry["text"]
    assert "background_tasks.add_task" not in entry["text"]  # snippets kept out of the index


def test_switch_the_wall_to_another_headline_clause(built, server, browser):
    from selenium.webdriver.support.ui import Select

    browser.open(server + "index.html")
    tiles = "return Array.from(document.querySelectorAll('#bgm-wall .bgm-tile'))" \
            ".map(function (t) { return t.className + '|' + t.title; });"
    before = browser.js(tiles)
    Select(browser.driver.find_element("id", "bgm-wall-clause")).select_by_value("LIFE-1")
    after = browser.js(tiles)
    assert len(after) == len(before) and after != before
    assert all(t.split("|")[1].startswith("FastAPI ") for t in after)
    legend = browser.js("return document.querySelector('.bgm-wall-legend').textContent;")
    assert "conforms" in legend or "deviates" in legend or "n/a" in legend
    browser.screenshot(server + "index.html", "home-wall-1400.png", 1600)


def test_cite_any_clause_of_a_cell(built, server, browser):
    from selenium.webdriver.support.ui import Select

    _, snapshot = built
    result = next(r for r in snapshot.cells("fastapi") if r["state"] == "ok")
    cid = result["cell"]["id"]
    browser.open(f"{server}cells/{cid}.html")
    select = Select(browser.driver.find_element("id", "bgm-cite-clause"))
    options = [o.get_attribute("value") for o in select.options]
    assert len(options) > 5
    for other in [*options[1:], options[0]]:  # every clause, each built by js/releases.js
        select.select_by_value(other)
        text = browser.js("return document.getElementById('bgm-cite-text').textContent;")
        assert text.strip() == cite.cell_markdown(snapshot, other, cid), other


def test_site_search_finds_a_release_by_its_number(built, server, browser):
    """Typed into the search box as a person does (the theme's search worker, with the files
    the build prunes gone): the release's own page is among the results."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, snapshot = built
    version = next(r["cell"]["fastapi"] for r in snapshot.cells("fastapi") if r["state"] == "ok")
    browser.open(server + "index.html")
    box = browser.driver.find_element(By.CSS_SELECTOR, "input.md-search__input")
    WebDriverWait(browser.driver, 20).until(lambda d: box.is_displayed())  # the wide header's box
    box.click()
    box.send_keys(version)
    WebDriverWait(browser.driver, 20).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, ".md-search-result__item a"))
    hrefs = [a.get_attribute("href") for a in browser.driver.find_elements(
        By.CSS_SELECTOR, ".md-search-result__item a")]
    assert any(h.split("#")[0].endswith(f"releases/{version}.html") for h in hrefs), hrefs
