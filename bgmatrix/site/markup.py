"""Making untrusted text safe for a page: the one escaping function (HTML itself comes from
the templates, through ``render``, whose every printed value passes through ``esc``).

Everything a result file carries (exception and warning messages, event logs, package names,
labels, test names) was produced by the application under test or by a tool, so it is data,
never markup. ``esc`` is the single door through which such text enters a page: it turns the
text into HTML that neither a browser nor Markdown will interpret, on one line, truncated.
The full text stays in the raw result, which the page links to.
"""

from __future__ import annotations

import json
import re

#: Characters kept from one piece of evidence text; the raw result keeps all of it.
TEXT_LIMIT = 2000

# Lone surrogates (invalid UTF-8 decoded with surrogateescape) cannot be written as UTF-8;
# C0/C1 controls and bidi overrides can make text look unlike what it is.
_UNPRINTABLE = re.compile(
    "[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)

# HTML-significant characters, and every character Markdown (with attr_list and tables) gives a
# meaning, become numeric references: Markdown passes references through untouched and the
# browser shows the character. Newlines become references too, so escaped text never spans
# lines: a raw HTML block never ends inside it, and a ``<pre>`` still shows the line breaks.
_ENTITIES = {
    ch: f"&#{ord(ch)};" for ch in "&<>\"'`*_{}[]()#+-!|~\\\n\r\t"
}
_CONTEXTS = {
    "markdown": re.compile("[" + re.escape("".join(_ENTITIES)) + "]"),
    "block": re.compile("[&<>\r]"),
    "attr": re.compile("[&<>\"'\n\r\t]"),
}


def clean(value: object, limit: int | None = TEXT_LIMIT) -> str:
    """``value`` as printable, UTF-8-encodable text, cut to ``limit`` characters with a note."""
    text = value if isinstance(value, str) else str(value)
    text = _UNPRINTABLE.sub("\ufffd", text)
    if limit is not None and len(text) > limit:
        more = len(text) - limit
        text = f"{text[:limit]} … [{more:,} more characters in the raw result]"
    return text


def esc(value: object, limit: int | None = TEXT_LIMIT, context: str = "markdown") -> str:
    """Untrusted text as inert HTML: the only way evidence enters a page.

    ``context`` says who reads the result besides the browser:

    - ``"markdown"`` (the default): Markdown may see it (list items, paragraphs, headings), so
      every character Markdown gives a meaning becomes a numeric reference too.
    - ``"block"``: element content inside a raw HTML block (``render.raw``), which Markdown
      sets aside unread (blank lines included), so only HTML's own characters are referenced.
      Evidence text blocks use this: a reference per character, or per line, costs the HTML
      parsers of Markdown and mkdocs dearly on a full matrix.
    - ``"attr"``: a quoted attribute value, which Markdown never reads either.
    """
    pattern = _CONTEXTS[context]
    return pattern.sub(lambda m: _ENTITIES[m.group()], clean(value, limit))


def json_for_script(data: object) -> str:
    """JSON to embed in ``<script type="application/json">``: no ``<``, ``>`` or ``&`` appear,
    so no string in the data can close the element or open a comment."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), sort_keys=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def md_code(value: object, limit: int = 200) -> str:
    """A Markdown code span for plain Markdown outside our pages (citations pasted on GitHub).

    Backticks and line breaks cannot be escaped inside a code span, so they are replaced.
    """
    text = clean(value, limit).replace("`", "'").replace("\n", " ").replace("\r", " ")
    return f"`{text}`"
