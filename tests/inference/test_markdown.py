"""Answers' Markdown becomes HTML that can run nothing and fetch nothing."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from apps.inference import markdown
from apps.inference.markdown import ATTRIBUTES, HIGHLIGHT_LIMIT, TOKEN_CLASSES, render_markdown

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


@pytest.mark.parametrize("language", ["", "js"])  # plain, and highlighted
def test_code_is_escaped_once_and_reads_as_written(language: str) -> None:
    html = render_markdown(
        f"```{language}\n{CODE}\n```\n\nInline: `{CODE.splitlines()[0]}` and `<script>`"
    )

    assert "&amp;lt;" not in html and "&amp;amp;" not in html and "&amp;quot;" not in html
    assert "if (a &lt; b &amp;&amp; c &gt; d)" in re.sub(r"</?span[^>]*>", "", html)
    built = Elements(html)
    assert CODE in built.text
    assert "if (a < b && c > d)" in built.text.split("Inline:")[1]
    assert "<script>" in built.text.split("Inline:")[1]
    assert set(built.tags) - {"span"} == {"pre", "code", "p"}  # the script is text


def test_bare_links_outside_code_become_links_but_not_inside_code() -> None:
    html = render_markdown("See https://example.org and `https://example.com`")

    assert '<a href="https://example.org" rel="noopener noreferrer nofollow"' in html
    assert "<code>https://example.com</code>" in html


def test_code_in_a_language_pygments_knows_is_highlighted_with_token_classes() -> None:
    html = render_markdown("```python\ndef area(r):\n    return 3.14 * r ** 2  # circle\n```")

    assert '<pre><code class="language-python"><span class="tok-k">def</span>' in html
    assert '<span class="tok-nf">area</span>' in html
    assert '<span class="tok-c1"># circle</span>' in html
    assert "style=" not in html
    assert Elements(html).text.rstrip() == "def area(r):\n    return 3.14 * r ** 2  # circle"


@pytest.mark.parametrize("language", ["nosuchlanguage", "", "py{thon}"])
def test_code_in_an_unknown_or_no_language_stays_plain_and_escaped(language: str) -> None:
    html = render_markdown(f"```{language}\nplot <b>a < b</b> & print\n```")

    assert "<span" not in html
    assert "plot &lt;b&gt;a &lt; b&lt;/b&gt; &amp; print" in html
    assert Elements(html).text.rstrip() == "plot <b>a < b</b> & print"


HOSTILE_FENCES = [
    "```python\n</code></pre><script>window.pwned = 1</script>\n```",
    '```x" onclick="window.pwned = 1\nx\n```',
    '```python" onclick="window.pwned = 1\nx\n```',
    '```"><script>window.pwned = 1</script>\nx\n```',
    '```python\n<span class="evil" style="color: red">x</span>\n```',
    '```html\n<img src=x onerror="window.pwned = 1">\n```',
]


@pytest.mark.parametrize("answer", HOSTILE_FENCES)
def test_a_fence_cannot_inject_elements_or_attributes(answer: str) -> None:
    html = render_markdown(answer)
    built = Elements(html)

    assert set(built.tags) <= {"pre", "code", "span", "p"}
    assert {name for name, _ in built.attributes} <= {"class"}
    for tag, value in re.findall(r'<(span|code) class="([^"]*)"', html):
        assert value in TOKEN_CLASSES if tag == "span" else re.fullmatch(r"language-\w+", value)


def test_the_cleaner_keeps_only_token_classes_on_spans_and_language_classes_on_code() -> None:
    span, code = ATTRIBUTES["span"], ATTRIBUTES["code"]
    assert callable(span) and callable(code)

    assert span("span", "class", "tok-k") and span("span", "class", "tok-s2")
    assert not span("span", "class", "evil")
    assert not span("span", "class", "tok-k evil")
    assert not span("span", "style", "color: red")
    assert code("code", "class", "language-python") and code("code", "class", "language-c++")
    assert not code("code", "class", "evil")
    assert not code("code", "class", 'language-x" onclick="y')
    assert not code("code", "class", "language-")
    assert not code("code", "onclick", "language-python")


def test_whatever_the_highlighter_writes_is_cleaned(monkeypatch: pytest.MonkeyPatch) -> None:
    written = (
        '<span class="tok-k">def</span> <span class="evil" style="color: red" onclick="x">f</span>'
        '<script>window.pwned = 1</script><img src="https://example.org/p.png">'
    )
    monkeypatch.setattr(markdown, "pygments", SimpleNamespace(format=lambda *_: written))

    html = render_markdown("```python\ndef f\n```")

    assert '<span class="tok-k">def</span> <span>f</span>' in html
    assert "evil" not in html and "style" not in html and "onclick" not in html
    assert "<script" not in html and "<img" not in html


def test_code_past_the_highlight_limit_stays_plain() -> None:
    line = "total = total + 1  # count\n"
    block = line * (HIGHLIGHT_LIMIT // len(line) + 1)

    assert "<span" not in render_markdown(f"```python\n{block}```")
    assert Elements(render_markdown(f"```python\n{block}```")).text.rstrip() == block.rstrip()


def test_one_answer_highlights_at_most_the_limit_in_all_its_code() -> None:
    line = "total = total + 1\n"
    block = line * (HIGHLIGHT_LIMIT // len(line) // 2 + 1)  # two fit in the limit only just not

    first, second = render_markdown(f"```python\n{block}```\n\n```python\n{block}```").split(
        "</pre>"
    )[:2]

    assert "<span" in first
    assert "<span" not in second


CODE_CSS = Path(__file__).resolve().parents[2] / "static" / "css" / "code.css"


def _themes() -> dict[str, tuple[str, str]]:
    """Each theme's token rules in code.css, and its code background."""
    css = CODE_CSS.read_text()
    background = dict(re.findall(r"^(\S.*?) \{ --code-bg: (#\w+)", css, re.MULTILINE))
    rules: dict[str, list[str]] = {}
    for scope, rule in re.findall(r"^ *(.*?)(\.markdown pre code :is.*)$", css, re.MULTILINE):
        rules.setdefault(scope, []).append(rule)
    light, dark = background[":root"], background['html[data-theme="dark"]']
    themes = {
        "light": ("\n".join(rules.pop("")), light),
        "dark, chosen": ("\n".join(rules.pop('html[data-theme="dark"] ')), dark),
        "dark, the system's": ("\n".join(rules.pop('html:not([data-theme="light"]) ')), dark),
    }
    assert not rules  # no rules for a theme these tests do not know
    return themes


def test_code_css_colours_every_token_class_in_every_theme() -> None:
    for theme, (rules, _) in _themes().items():
        assert set(re.findall(r"\.(tok-\w+)", rules)) == TOKEN_CLASSES, theme


def _luminance(colour: str) -> float:
    red, green, blue = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    linear = [
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_code_css_colours_meet_wcag_aa_contrast_on_their_background() -> None:
    for theme, (rules, background) in _themes().items():
        for colour in set(re.findall(r"color: (#[0-9a-f]{6})", rules)):
            lighter, darker = sorted((_luminance(colour), _luminance(background)), reverse=True)
            assert (lighter + 0.05) / (darker + 0.05) >= 4.5, (theme, colour)
