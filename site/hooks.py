"""The site's mkdocs hooks (site/mkdocs.yml, ``hooks:``): plain functions, no plugin."""

from __future__ import annotations

from typing import Any

from bgmatrix.site.build import compact_page


def on_post_page(output: str, **_: Any) -> str:
    """Each page without the theme's indentation, before mkdocs writes it (not read back and
    rewritten after the build)."""
    return compact_page(output)


def on_post_template(output_content: str, template_name: str, **_: Any) -> str:
    """The same for the theme's static HTML pages (404.html); sitemap.xml is left as it is."""
    return compact_page(output_content) if template_name.endswith(".html") else output_content
