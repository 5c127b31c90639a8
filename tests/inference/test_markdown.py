"""Answers' Markdown becomes HTML that can run nothing and fetch nothing."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from apps.inference.markdown import render_markdown

HOSTILE = [
    "<script>window.pwned = 1</script>",
    '<img src="x" onerror="window.pwned = 1">',
    '<a href="javascript:window.pwned = 1">click</a>',
    "[click](javascript:window.pwned=1)",
    '<svg onload="window.pwned = 1"></svg>',
    "<iframe src='https://example.org'></iframe>",
    '<p style="background:url(javascript:1)">x</p>',
]


class Elements(HTMLParser):
    """The elements and attributes a browser would build from the HTML, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.text = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]

    def handle_data(self, data: str) -> None:
        self.text += data


@pytest.mark.parametrize("answer", HOSTILE)
def test_html_in_an_answer_is_shown_as_text(answer: str) -> None:
    built = Elements(render_markdown(answer))

    assert set(built.tags) <= {"p", "a"}
    assert not [name for name, _ in built.attributes if name.startswith("on") or name == "style"]
    assert not [
        value for name, value in built.attributes if name == "href" and "javascript" in value
    ]
    assert built.text.strip() == answer  # shown as written, not silently dropped


def test_markdown_is_rendered() -> None:
    html = render_markdown("# Title\n\n**bold** and `code`\n\n- one\n- two\n\n```\nx = 1\n```")

    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<li>one</li>" in html and "<pre><code>x = 1\n</code></pre>" in html


def test_links_open_apart_and_images_are_never_fetched() -> None:
    html = render_markdown("[docs](https://example.org) ![tracker](https://example.org/p.png)")

    assert (
        '<a href="https://example.org" rel="noopener noreferrer nofollow" target="_blank">' in html
    )
    assert "<img" not in html


CODE = 'if (a < b && c > d) {\n  <script>alert("a4")</script>\n}'


def test_code_is_escaped_once_and_reads_as_written() -> None:
    html = render_markdown(f"```js\n{CODE}\n```\n\nInline: `{CODE.splitlines()[0]}` and `<script>`")

    assert "&amp;lt;" not in html and "&amp;amp;" not in html and "&amp;quot;" not in html
    assert "if (a &lt; b &amp;&amp; c &gt; d)" in html
    built = Elements(html)
    assert CODE in built.text
    assert "if (a < b && c > d)" in built.text.split("Inline:")[1]
    assert "<script>" in built.text.split("Inline:")[1]
    assert set(built.tags) == {"pre", "code", "p"}  # the script is text, not an element


def test_bare_links_outside_code_become_links_but_not_inside_code() -> None:
    html = render_markdown("See https://example.org and `https://example.com`")

    assert '<a href="https://example.org" rel="noopener noreferrer nofollow"' in html
    assert "<code>https://example.com</code>" in html
