"""Answers rendered as Markdown into HTML that can run nothing.

Two layers: markdown-it never passes raw HTML through (it is escaped as text) and draws no
images (an answer must not make the browser fetch anything); bleach then keeps only the tags
and attributes listed here, and links only to http(s) and mailto. The chat page also forbids
inline scripts in its Content-Security-Policy.

Bare URLs become links in the same pass as the cleaning (a filter of the cleaner's token
stream): bleach's separate `Linker` re-serialises the text it skips in `pre` and `code`
escaped a second time, so `a < b` in code showed as `a &lt; b`.

Fenced code in a language Pygments knows by the fence's name for it is highlighted here, on
the server, as spans with one token class each (`tok-k`, a keyword; `static/css/code.css`
colours them), never an inline style, which the page's CSP would refuse. The cleaner keeps a
span's class only if it is one of those token classes, and a `code` element's only if it names
a language, so what the highlighter writes is checked as strictly as the rest of the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from functools import partial
from typing import cast

import bleach
import pygments
from bleach.linkifier import LinkifyFilter
from markdown_it import MarkdownIt
from markdown_it.utils import OptionsDict, OptionsType
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES, Escape, Generic, Name, Other, Punctuation, Text
from pygments.token import _TokenType as TokenType
from pygments.util import ClassNotFound

# Characters of code highlighted in one answer; a block past them stays plain. The cleaner's
# time grows with the spans, so dense code renders about ten times slower highlighted, and an
# answer of nothing else must not get to ask for that without end (bench/markdown.py).
HIGHLIGHT_LIMIT = 20_000
LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")
# Drawn in the code's own colour by both themes of code.css, so they need no span (dense code
# has about one token for every two characters).
UNCOLOURED = frozenset(
    {
        Text,
        Text.Whitespace,
        Escape,
        Other,
        Name,
        Name.Other,
        Punctuation,
        Punctuation.Marker,
        Generic,
    }
)
TOKEN_CLASSES = frozenset(
    f"tok-{name}" for kind, name in STANDARD_TYPES.items() if name and kind not in UNCOLOURED
)

_markdown = (
    MarkdownIt("commonmark", {"html": False, "linkify": False})
    .enable(["table", "strikethrough"])
    .disable("image")
)
_formatter = HtmlFormatter(nowrap=True, classprefix="tok-")


def render_markdown(text: str) -> str:
    """Safe HTML for an answer's Markdown; whatever HTML the answer holds shows as text."""
    budget = HIGHLIGHT_LIMIT

    def highlight(code: str, language: str, attributes: str) -> str:
        nonlocal budget
        lexer = _lexer(language) if len(code) <= budget else None
        if lexer is None:
            return ""  # markdown-it escapes the code itself
        budget -= len(code)
        return str(pygments.format(_standard(lexer.get_tokens(code)), _formatter))

    options = OptionsDict(cast(OptionsType, {**_markdown.options, "highlight": highlight}))
    return str(_cleaner.clean(_markdown.renderer.render(_markdown.parse(text), options, {})))


def _lexer(language: str) -> Lexer | None:
    """Pygments' lexer for a fence's language, never a guess: guessing is slow, and wrong on
    the short snippets answers are full of. The code is kept as written, blank lines too."""
    if not LANGUAGE.fullmatch(language):
        return None
    try:
        return get_lexer_by_name(language.lower(), stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _standard(tokens: Iterable[tuple[TokenType, str]]) -> Iterator[tuple[TokenType, str]]:
    """Each token as its nearest standard type, so its span has a class from TOKEN_CLASSES
    (Pygments would make up classes such as `tok-nfFoo` for a lexer's own types), or as
    plain text if code.css draws it in the code's own colour."""
    for kind, text in tokens:
        while kind not in STANDARD_TYPES:
            kind = kind.parent
        yield (Text if kind in UNCOLOURED else kind), text


def _token_class(tag: str, name: str, value: str) -> bool:
    return name == "class" and value in TOKEN_CLASSES


def _language_class(tag: str, name: str, value: str) -> bool:
    prefix, _, language = value.partition("-")
    return name == "class" and prefix == "language" and bool(LANGUAGE.fullmatch(language))


TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
    "span",
}  # fmt: skip
ATTRIBUTES: dict[str, list[str] | Callable[[str, str, str], bool]] = {
    "a": ["href", "title"],
    "code": _language_class,
    "span": _token_class,
    "ol": ["start"],
}
PROTOCOLS = {"http", "https", "mailto"}
Attributes = MutableMapping[tuple[str | None, str], str]


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
