"""Accessibility and weight of the built site.

- axe-core (the copy the ``axe-selenium-python`` wheel bundles, injected from disk, never from a
  CDN) finds no serious or critical violation on any page type, at 1400 px and at 420 px;
- every text/background pair of site.css meets WCAG 2.2 AA (4.5:1), computed from the CSS;
- conforms and deviates stay apart for a colour-blind reader (simulated), and the verdict is
  never colour alone (the matrix test in test_browser.py checks the glyph in every cell);
- the built site makes no request outside itself (no third-party font, script or style), and
  keeps to its weight budgets (bgmatrix.site.build: SITE_BUDGET, HTML_BUDGET, SEARCH_BUDGET).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bgmatrix.site import build
from bgmatrix.spec import ROOT
from tests.unit.site_browser import SCREENS, WIDTHS, browser_session, built_site, serve

CSS = ROOT / "site" / "docs" / "css" / "site.css"
AA = 4.5


# ---------------------------------------------------------------------------------------------
# Colours, from the CSS


def _hex(value: str) -> tuple[float, float, float]:
    value = value.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    return tuple(int(value[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def _linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb: tuple[float, float, float]) -> float:
    r, g, b = (_linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(_hex(a)), luminance(_hex(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def css_rules() -> dict[str, dict[str, str]]:
    """selector -> {property: value}, with var(--x) resolved from :root."""
    text = re.sub(r"/\*.*?\*/", "", CSS.read_text(encoding="utf-8"), flags=re.S)
    rules: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", text):
        props = dict((k.strip(), v.strip()) for k, v in
                     (d.split(":", 1) for d in body.split(";") if ":" in d))
        for sel in selectors.split(","):
            rules.setdefault(sel.strip(), {}).update(props)
    root = rules.get(":root", {})

    def resolve(value: str) -> str:
        return re.sub(r"var\((--[\w-]+)\)", lambda m: root.get(m.group(1), m.group(0)), value)

    return {sel: {k: resolve(v) for k, v in props.items()} for sel, props in rules.items()}


def colour(value: str) -> str | None:
    found = re.search(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b", value or "")
    return found.group(0) if found else None


#: (selector of the text colour, selector of the background it sits on, default colours)
PAIRS = [
    (f".v-{v}", f".v-{v}", None, None) for v in ("ok", "dev", "na", "fail", "none")
] + [
    (f".b-{b}", f".b-{b}", "#ffffff", None)
    for b in ("drop", "warn", "merge", "warnmerge", "duplicate", "lost", "other", "na",
              "failed", "none")
] + [
    (".bgm-notice", ".bgm-notice", None, None),
    (".md-typeset .bgm-grid tbody th small", ".md-typeset .bgm-grid tbody th", None, None),
    (".md-typeset .bgm-grid td.bgm-st", ".md-typeset .bgm-grid td.bgm-st", None, None),
    (".md-typeset .bgm-grid tr.bgm-section th", ".md-typeset .bgm-grid tr.bgm-section th",
     None, None),
    (".md-typeset .bgm-grid button", ".md-typeset .bgm-grid tbody th", None, None),
]


def test_every_text_colour_meets_wcag_aa_contrast():
    rules = css_rules()
    failures = []
    for fg_sel, bg_sel, fg_default, _ in PAIRS:
        fg = colour(rules.get(fg_sel, {}).get("color", "")) or fg_default
        bg = colour(rules.get(bg_sel, {}).get("background", "")
                    or rules.get(bg_sel, {}).get("background-color", ""))
        assert fg and bg, f"{fg_sel} / {bg_sel}: no colour found in site.css"
        ratio = contrast(fg, bg)
        if ratio < AA:
            failures.append(f"{fg_sel}: {fg} on {bg} is {ratio:.2f}:1")
    assert not failures, "\n".join(failures)


#: Viénot, Brettel & Mollon (1999) dichromat simulation, in linear RGB.
SIMULATIONS = {
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216),
                   (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413),
                     (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602),
                   (0.004733, 0.691367, 0.303900)),
}


def _simulate(value: str, matrix) -> tuple[float, ...]:
    lin = [_linear(c) for c in _hex(value)]
    return tuple(min(1.0, max(0.0, sum(m * c for m, c in zip(row, lin)))) for row in matrix)


def test_conforms_and_deviates_stay_apart_for_colour_blind_readers():
    """The two verdict backgrounds (and the wall's drop and merge) differ clearly under every
    simulated dichromacy: the old green/red pair was 1.05:1 apart under deuteranopia."""
    rules = css_rules()
    pairs = [(colour(rules[".v-ok"]["background"]), colour(rules[".v-dev"]["background"])),
             (colour(rules[".b-merge"]["background"]), colour(rules[".b-drop"]["background"]))]
    for name, matrix in SIMULATIONS.items():
        for a, b in pairs:
            assert a and b
            sa, sb = _simulate(a, matrix), _simulate(b, matrix)
            distance = sum((x - y) ** 2 for x, y in zip(sa, sb)) ** 0.5
            assert distance > 0.08, f"{a} and {b} look alike under {name} ({distance:.3f})"


# ---------------------------------------------------------------------------------------------
# Self-contained and light (the real site, built once for this run)


class _Requests(HTMLParser):
    """Every URL a page makes the browser fetch on its own: scripts, styles, images, fonts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, name, attrs):
        a = dict(attrs)
        if name in ("script", "img", "iframe", "audio", "video", "source", "embed") \
                and a.get("src"):
            self.urls.append(a["src"] or "")
        if name == "link" and a.get("href") and set((a.get("rel") or "").split()) & {
                "stylesheet", "preconnect", "preload", "dns-prefetch", "icon", "prefetch",
                "modulepreload", "manifest"}:
            self.urls.append(a["href"] or "")


EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)


def test_the_built_site_makes_no_request_outside_itself():
    site, _ = built_site()
    found = set()
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        parser = _Requests()
        parser.feed(text)
        found |= {u for u in parser.urls if EXTERNAL.match(u)}
        if "fonts.googleapis" in text or "fonts.gstatic" in text:
            found.add(f"{page.name}: a font host")
    for sheet in list(site.rglob("*.css")) + list(site.rglob("*.js")):
        text = sheet.read_text(encoding="utf-8", errors="replace")
        found |= {f"{sheet.name}: {m}" for m in re.findall(
            r"@import\s+url\(\s*['\"]?(https?://[^'\")]+)|url\(\s*['\"]?(https?://[^'\")]+)",
            text) for m in m if m}
    assert not found, sorted(found)[:20]


def test_the_built_site_keeps_to_its_weight_budgets():
    """Issue 15, item 8: the whole site, its largest page and the search index each within
    their budget; raw results are not copied in; cell pages and test sources stay out of
    the index. Past a budget, the message names where the weight is."""
    site, _ = built_site()
    weight = build.weight(site)
    report = (f"{weight['total'] / 2**20:.1f} MB in all, largest page "
              f"{weight['largest_page'] / 1024:,.0f} KB, search index "
              f"{weight['search_index'] / 1024:,.0f} KB")
    print(report)
    assert not (site / "results").exists(), "raw results are copied into the site"
    assert weight["largest_page"] <= build.HTML_BUDGET, report
    # Release, clause and spec pages stay searchable; cell pages and evidence do not.
    docs = json.loads((site / "search" / "search_index.json").read_text())["docs"]
    where = {d["location"].split("#")[0] for d in docs}
    assert any(w.startswith("clauses/") for w in where)
    assert any(w.startswith("spec/") for w in where)
    assert not any(w.startswith(("cells/", "suite/")) for w in where)
    by_folder: dict[str, int] = {}
    for path in site.rglob("*"):
        if path.is_file():
            key = path.relative_to(site).parts[0] if len(path.relative_to(site).parts) > 1 \
                else "(top)"
            by_folder[key] = by_folder.get(key, 0) + path.stat().st_size
    heaviest = ", ".join(f"{k} {v / 2**20:.1f} MB"
                         for k, v in sorted(by_folder.items(), key=lambda kv: -kv[1])[:4])
    assert weight["total"] <= build.SITE_BUDGET, \
        f"{report}: over the {build.SITE_BUDGET // 2**20} MB budget; heaviest: {heaviest}"
    by_part: dict[str, int] = {}
    for d in docs:
        key = d["location"].split("#")[0].split("/")[0]
        by_part[key] = by_part.get(key, 0) + len(d["text"])
    top = ", ".join(f"{k} {v / 1024:.0f} KB"
                    for k, v in sorted(by_part.items(), key=lambda kv: -kv[1])[:4])
    assert weight["search_index"] <= build.SEARCH_BUDGET, \
        f"{report}: search index over {build.SEARCH_BUDGET // 1024} KB; largest: {top}"


# ---------------------------------------------------------------------------------------------
# axe-core on every page type, at both widths


def _axe_source() -> str:
    import axe_selenium_python

    path = Path(axe_selenium_python.__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
    return path.read_text(encoding="utf-8")


def page_types(site: Path) -> dict[str, str]:
    """One page of each kind the site has (a release page where the site has them)."""
    cell = sorted((site / "cells").glob("fa-*.html"))[len(list((site / "cells").glob(
        "fa-*.html"))) // 2]
    kinds = {
        "home": "index.html",
        # One chapter's columns: the rules are the same for every column, and axe's contrast
        # check over all ~90 columns and 600 rows takes minutes.
        "matrix": "matrix.html#clause=ATTACH",
        "clause": "clauses/ATTACH-3.html",
        "cell": f"cells/{cell.name}",
        "decision": "decision.html",
        "spec": "spec/attachment.html",
        "changes": "changes.html",
    }
    for folder in ("releases", "release"):
        pages = sorted(p for p in (site / folder).glob("*.html") if p.name != "index.html") \
            if (site / folder).is_dir() else []
        if pages:
            kinds["release"] = f"{folder}/{pages[0].name}"
    return kinds


@pytest.fixture(scope="module")
def axe_browser():
    yield from browser_session()


def test_no_serious_or_critical_axe_violation_on_any_page_type(axe_browser):
    site, _ = built_site()
    source = _axe_source()
    problems = []
    with serve(site) as server:
        for kind, path in page_types(site).items():
            for width in WIDTHS:
                axe_browser.open(server + path, width, 1100)
                axe_browser.js(source)
                axe_browser.driver.set_script_timeout(110)
                result = axe_browser.driver.execute_async_script(
                    "var done = arguments[arguments.length - 1];"
                    "axe.run(document, {resultTypes: ['violations']})"
                    ".then(function (r) { done(r.violations); },"
                    " function (e) { done([{id: 'axe-error', impact: 'critical',"
                    " help: String(e), nodes: []}]); });")
                for v in result:
                    if v.get("impact") in ("serious", "critical"):
                        where = ", ".join(n["target"][0] if isinstance(n["target"][0], str)
                                          else str(n["target"][0]) for n in v["nodes"][:3])
                        problems.append(f"{kind} ({path}, {width} px): {v['id']} "
                                        f"[{v['impact']}] {v['help']} — {where}")
                # The page as axe saw it, for a person to review (site/_screens/).
                axe_browser.driver.save_screenshot(str(SCREENS / f"page-{kind}-{width}.png"))
    assert not problems, f"{len(problems)} serious/critical violations:\n" + "\n".join(problems)
