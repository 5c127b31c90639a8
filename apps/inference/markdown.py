"""Answers rendered as Markdown into HTML that can run nothing.

Two layers: markdown-it never passes raw HTML through (it is escaped as text) and draws no
images (an answer must not make the browser fetch anything); bleach then keeps only the tags
and attributes listed here, and links only to http(s) and mailto. The chat page also forbids
inline scripts in its Content-Security-Policy.

Bare URLs become links in the same pass as the cleaning (a filter of the cleaner's token
stream): bleach's separate `Linker` re-serialises the text it skips in `pre` and `code`
escaped a second time, so `a < b` in code showed as `a &lt; b`.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from functools import partial

import bleach
from bleach.linkifier import LinkifyFilter
from markdown_it import MarkdownIt

_markdown = (
    MarkdownIt("commonmark", {"html": False, "linkify": False})
    .enable(["table", "strikethrough"])
    .disable("image")
)

TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ATTRIBUTES = {"a": ["href", "title"], "code": ["class"], "ol": ["start"]}
PROTOCOLS = {"http", "https", "mailto"}
Attributes = MutableMapping[tuple[str | None, str], str]


def render_markdown(text: str) -> str:
    """Safe HTML for an answer's Markdown; whatever HTML the answer holds shows as text."""
    return str(_cleaner.clean(_markdown.render(text)))


def _external(attrs: Attributes, new: bool = False) -> Attributes:
    """Links open apart from the dashboard and tell the other site nothing."""
    attrs[(None, "rel")] = "noopener noreferrer nofollow"
    attrs[(None, "target")] = "_blank"
    return attrs


_cleaner = bleach.sanitizer.Cleaner(
    tags=TAGS,
    attributes=ATTRIBUTES,
    protocols=PROTOCOLS,
    strip=True,
    # After the sanitiser in the stream, so the rel and target it adds are kept.
    filters=[partial(LinkifyFilter, callbacks=[_external], skip_tags={"pre", "code"})],
)
