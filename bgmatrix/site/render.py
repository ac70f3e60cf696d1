"""Rendering: the Jinja2 environment that turns page data into HTML, and the page pieces that
several pages share (verdict badges, release names, citation blocks).

HTML comes only from the templates in ``bgmatrix/site/templates/``; Python code passes them
data. The environment autoescapes, and more: every value a template prints goes through
``markup.esc`` (Markdown context) unless it is already ``Markup`` (the output of a macro or of
one of the filters below), so text from a result can never become markup, neither for the
browser nor for Markdown, whatever context a template puts it in. The filters choose a lighter
or a shorter escape where the context allows it:

- ``text(limit)``: Markdown context, cut to ``limit`` characters (the default cuts at
  ``markup.TEXT_LIMIT``);
- ``block(limit)``: element content inside a raw HTML block (``<pre>`` evidence), which
  Markdown sets aside unread, so only HTML's own characters become references;
- ``attr``: a quoted attribute value (hrefs and ids we build from validated ids).

Macros are called from Python through :func:`part`; each returns ``Markup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from bgmatrix.site import model
from bgmatrix.site.markup import TEXT_LIMIT, esc

#: Front matter: a page left out of the site search index.
SEARCH_EXCLUDED = "---\nsearch:\n  exclude: true\n---\n\n"
#: The front matter of the generated detail pages: the theme without sidebars (see
#: site/overrides/lean.html). Release pages stay in the search index (a release is found by
#: its number); cell pages are reached from the release and matrix pages.
LEAN = "---\ntemplate: lean.html\n---\n\n"
LEAN_SEARCH_EXCLUDED = "---\ntemplate: lean.html\nsearch:\n  exclude: true\n---\n\n"
#: After a heading: the section it opens is left out of the search index (attr_list, read by
#: the theme's search). For long tables and for text that another page already indexes (the
#: spec's own chapters); the index must stay small enough to load on every page.
NOT_SEARCHED = " { data-search-exclude }"

#: Verdicts -> the CSS class that colours them (site/docs/css).
VERDICT_CLASSES = {
    "conforms": "v-ok",
    "deviates": "v-dev",
    "n/a": "v-na",
    "missing": "v-none",
}


def verdict_class(verdict: str) -> str:
    return VERDICT_CLASSES.get(verdict, "v-fail")


def _finalize(value: object) -> object:
    """Every printed value: ``Markup`` passes, anything else is escaped for Markdown too."""
    if isinstance(value, Markup):
        return value
    return Markup(esc(value))


def text(value: object, limit: int | None = TEXT_LIMIT) -> Markup:
    """Untrusted text for any context, Markdown included (``markup.esc``), as ``Markup``."""
    return Markup(esc(value, limit))


def _block(value: object, limit: int | None = TEXT_LIMIT) -> Markup:
    return Markup(esc(value, limit, "block"))


def _attr(value: object) -> Markup:
    return Markup(esc(value, None, "attr"))


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bgmatrix.site", "templates"),
        autoescape=True,
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(text=text, block=_block, attr=_attr,
                       verdict_class=lambda verdict: Markup(verdict_class(verdict)))
    return env


@cache
def _module(template: str) -> Any:
    return environment().get_template(template).module


def part(name: str, template: str = "parts.html") -> Any:
    """The macro ``name`` of ``template``, callable from Python; it returns ``Markup``."""
    return getattr(_module(template), name)


def page(template: str, **context: Any) -> str:
    """A whole page (Markdown with raw HTML blocks) from its template."""
    return environment().get_template(template).render(**context)


def raw(html: str) -> str:
    """A raw HTML block: blank lines around it, so Markdown leaves its content alone."""
    return f"\n\n{html}\n\n"


def unsearched(html: Markup) -> str:
    """A raw HTML block the site search leaves out (long tables whose text other pages
    index). A <section>, because the search plugin matches a skipped element by its tag name
    only and no <section> is nested in our tables (an inner </div> would end a <div>'s skip)."""
    return raw(Markup("<section data-search-exclude>{}</section>").format(html))


# ---------------------------------------------------------------------------------------------
# Pieces several pages share


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cell_href(root: str, cell_id: str) -> str:
    return f"{root}cells/{cell_id}.html"


def clause_href(root: str, clause_id: str) -> str:
    return f"{root}clauses/{clause_id}.html"


@lru_cache(maxsize=4096)
def clause_link(root: str, clause_id: str) -> Markup:
    """A clause's ID linked to its page, made once per root: a cell page has ~80 of them,
    ~57,000 on the full matrix, and each through the template costs."""
    return link(clause_href(root, clause_id), clause_id)


def code(label: object) -> Markup:
    return part("code")(label)


def link(href: str, text: object, **attrs: object) -> Markup:
    """An ``<a>``; ``text`` is escaped unless it is ``Markup``."""
    return part("link")(href, text, attrs)


def version_text(cell: Mapping[str, Any]) -> Markup:
    """A cell's versions: ``0.106.0 · st 0.27.0 · py3.8``."""
    return part("version_text")(version_parts(cell))


def version_parts(cell: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """What ``version_text`` shows, as (prefix, value, limit) for the template."""
    parts: list[tuple[str, str, int]] = []
    if cell["kind"] == "candidate":
        parts.append(("", cell["candidate"] or cell["id"], 80))
    if cell["fastapi"]:
        parts.append(("", cell["fastapi"], 40))
    if cell["starlette"]:
        parts.append(("st " if cell["kind"] != "starlette" else "", cell["starlette"], 40))
    parts.append(("py", cell["python"], 10))
    return parts


def safe_title(cell: Mapping[str, Any]) -> str:
    """A page title from version-like characters only: mkdocs copies the first heading's text,
    unescaped, into ``<title>`` and the header, where no escaping of ours survives."""
    parts = []
    if cell["kind"] == "candidate":
        parts.append("Candidate " + model.clean_version(cell["candidate"] or cell["id"]))
    if cell["fastapi"]:
        parts.append(f"FastAPI {model.clean_version(cell['fastapi'])}")
    if cell["starlette"]:
        parts.append(f"Starlette {model.clean_version(cell['starlette'])}")
    return " + ".join(parts) + f" on Python {cell['python']}"


def outcome_html(out: model.Outcome, short: bool = False) -> Markup:
    """A verdict badge with its label; ``short`` cuts long composite labels for grids (the
    cell page has them whole)."""
    verdict, label = out
    if short and len(label) > 40:
        label = label[:39] + "…"
    return part("outcome")(verdict, label, model.is_measured(out))


def outcomes_html(outs: tuple[model.Outcome, ...]) -> Markup:
    return Markup(" / ").join(outcome_html(o) for o in outs)


def citation_block(markdown: str) -> Markup:
    """The copy button and the citation text (shown too, so it works without JavaScript)."""
    return part("citation")(markdown)


def table(head: list, rows: list[list], class_: str = "bgm-table") -> Markup:
    """A table; cells are escaped unless they are ``Markup``."""
    return part("table")(head, rows, class_)
