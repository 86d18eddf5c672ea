"""Checks on a built site: links that lead nowhere, and anything a page would fetch from the web.

Both read the built files only (HTML, CSS, JavaScript), so they run in a second; the browser test
(``tests/test_site_browser.py``) then watches a real browser load the pages.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["broken_links", "network_loads"]

# <link rel=…> values whose href the browser fetches while loading the page
_FETCHED_RELS = {"stylesheet", "preload", "modulepreload", "icon", "manifest", "prefetch"}
_SRC_TAGS = {"script", "img", "iframe", "source", "video", "audio", "embed", "track", "input"}
# url(…) and @import in CSS (also inside <style> and style="…")
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])(?P<url>[^'")\s]+)""")
# a quoted absolute URL in JavaScript that names a file a script would load (code, styles, fonts,
# images, data), e.g. a CDN copy of a library
_JS_ASSET_URL = re.compile(
    r"""["'`](?P<url>(?:https?:)?//[^"'`\s]+?\.(?:m?js|css|woff2?|ttf|otf|eot|png|svg|jpe?g|gif|json|wasm))"""
    r"""(?:\?[^"'`\s]*)?["'`]"""
)


def _is_remote(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme in ("http", "https") or (not parts.scheme and url.strip().startswith("//"))


class _Page(HTMLParser):
    """A page's links (``href``/``src``), element ``id``s, and the URLs it loads as it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.loads: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name in ("href", "src"):
            if name in values:
                self.links.append(values[name])
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "name" in values:
            self.ids.add(values["name"])
        rels = set(values.get("rel", "").lower().split())
        if tag in _SRC_TAGS and values.get("src"):
            self.loads.append(values["src"])
        if tag in ("img", "source") and values.get("srcset"):
            self.loads += [candidate.split()[0] for candidate in values["srcset"].split(",")]
        if tag == "link" and rels & _FETCHED_RELS and values.get("href"):
            self.loads.append(values["href"])
        if tag in ("object",) and values.get("data"):
            self.loads.append(values["data"])
        self.loads += [m["url"] for m in _CSS_URL.finditer(values.get("style", ""))]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.loads += [m["url"] for m in _CSS_URL.finditer(data)]


def _read_page(path: Path) -> _Page:
    parser = _Page()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _pages(root: Path) -> list[Path]:
    """The site's HTML pages: every ``.html`` file except the theme's template fragments, which
    Sphinx copies into ``_static/`` but no page shows."""
    return [p for p in sorted(root.rglob("*.html")) if "_static" not in p.relative_to(root).parts]


def _has_anchor(page: _Page, fragment: str) -> bool:
    """Whether ``#fragment`` lands somewhere in ``page``: like a browser, try the id as written,
    then percent-decoded."""
    return fragment in page.ids or unquote(fragment) in page.ids


def broken_links(site_dir: Path) -> list[str]:
    """Every relative link in the site's pages that leads nowhere, as ``"page: 'link' …"`` lines.

    External links (``http(s):``, ``mailto:``, ``data:`` …) are not followed. A relative link must
    name a file inside ``site_dir``; its ``#anchor``, if any, must be an ``id`` of the HTML page it
    names (``#anchor`` alone: of the page itself). An empty list means the site is sound.
    """
    root = Path(site_dir).resolve()
    pages = {path: _read_page(path) for path in _pages(root)}
    problems: list[str] = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(root).as_posix()}: {link!r}"
            if not target.is_relative_to(root) or not target.is_file():
                problems.append(f"{where} names no file of the site")
            elif (
                parts.fragment
                and target in pages
                and not _has_anchor(pages[target], parts.fragment)
            ):
                problems.append(f"{where}: {target.name} has no id {parts.fragment!r}")
    return problems


def network_loads(site_dir: Path) -> list[str]:
    """Everything the site would fetch from another host while a page loads, as
    ``"file: url"`` lines: ``src``/``srcset`` of scripts, images, frames and media, stylesheets,
    icons and preloads in every page, ``url()``/``@import`` in pages and style sheets, and quoted
    absolute URLs of code, style, font, image or data files in scripts. Links a reader clicks
    (``<a href>``) are not loads. An empty list means the site works with no network.
    """
    root = Path(site_dir)
    pages = set(_pages(root))
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        where = path.relative_to(root).as_posix()
        if path in pages:
            urls = _read_page(path).loads
        elif path.suffix == ".css":
            urls = [m["url"] for m in _CSS_URL.finditer(path.read_text(encoding="utf-8"))]
        elif path.suffix in (".js", ".mjs"):
            urls = [m["url"] for m in _JS_ASSET_URL.finditer(path.read_text(encoding="utf-8"))]
        else:
            continue
        found += [f"{where}: {url}" for url in urls if _is_remote(url)]
    return found
