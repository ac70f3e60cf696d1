"""What the browser tests share (test_browser.py, test_a11y.py): the real site built once per
test run, a local server for it, and a Selenium-driven headless Chromium (Debian's chromium and
chromium-driver: nothing is downloaded, Selenium Manager is never asked for a driver).

The site is built from the committed results when there are any (so the screenshots show real
data), otherwise from synthetic results. Screenshots go to site/_screens/ (git-ignored).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bgmatrix import cli
from bgmatrix.site import model
from bgmatrix.spec import ROOT
from tests.unit.test_report import synthetic_results, write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENS = ROOT / "site" / "_screens"
WIDTHS = (1400, 420)  # a desktop window and a phone held upright
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)
NO_CHROMIUM = ("headless Chromium or its driver is not installed "
               "(Debian: apt-get install -y chromium chromium-driver)")


@functools.lru_cache(maxsize=1)
def built_site() -> tuple[Path, model.Snapshot]:
    """``bgmatrix report`` into a temporary folder, once per process."""
    tmp = Path(tempfile.mkdtemp(prefix="bgm-browser-"))
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


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass


@contextmanager
def serve(site: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


class Browser:
    """One headless Chromium, driven by Selenium through Debian's chromedriver."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM or ""
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={WIDTHS[0]},1100")
        self.driver = webdriver.Chrome(options=options,
                                       service=Service(executable_path=CHROMEDRIVER))
        self.driver.set_page_load_timeout(60)

    def quit(self) -> None:
        self.driver.quit()

    def open(self, url: str, width: int = WIDTHS[0], height: int = 1100) -> None:
        """Load ``url`` at that window size and wait until its scripts have drawn."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.set_window_size(width, height)
        self.driver.get("about:blank")  # a hash-only change would not reload the page
        self.driver.get(url)
        WebDriverWait(self.driver, 30).until(lambda d: d.execute_script(
            "var m = document.getElementById('bgm-matrix');"
            "return document.readyState === 'complete' &&"
            " (!m || m.hasAttribute('data-rendered'));"))

    def js(self, script: str, *args: object) -> object:
        return self.driver.execute_script(script, *args)

    def dom(self, url: str) -> str:
        """The DOM after the page's scripts ran."""
        self.open(url)
        return self.driver.page_source

    def screenshot(self, url: str, name: str, height: int = 1100,
                   width: int = WIDTHS[0]) -> Path:
        path = SCREENS / name
        path.unlink(missing_ok=True)
        self.open(url, width, height)
        self.driver.save_screenshot(str(path))
        assert path.is_file() and path.stat().st_size > 5_000, f"no screenshot at {path}"
        return path

    def screenshots(self, url: str, stem: str, height: int = 1100) -> list[Path]:
        """``stem-1400.png`` and ``stem-420.png``, for a person to review."""
        return [self.screenshot(url, f"{stem}-{w}.png", height, w) for w in WIDTHS]


def browser_session() -> Iterator[Browser]:
    """The body of a module's browser fixture (``yield from browser_session()``): one Browser,
    quit after the module. Where Chromium or its driver is not installed it skips, saying why;
    only the tests that ask for the fixture (the rendering tests) skip."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(NO_CHROMIUM)
    SCREENS.mkdir(parents=True, exist_ok=True)
    b = Browser()
    yield b
    b.quit()


class Text(HTMLParser):
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


def parse(dom: str) -> Text:
    page = Text()
    page.feed(dom)
    return page
