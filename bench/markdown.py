"""Rendering an answer's Markdown with its code highlighted, against the same answer plain.

Three answers: a typical one (a paragraph and a 60-line Python block), one whose single block
of dense JavaScript just fits in `HIGHLIGHT_LIMIT`, and a hostile one of ten such blocks,
rendered with the limit and without it. "plain" is the same `render_markdown` with the limit
set to 0, so nothing is highlighted. REPEATS renders of each, in turns; medians.

Run: .venv/bin/python bench/markdown.py (BENCH_REPEATS=3 for a quick try). Writes its section
of docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from apps.inference import markdown  # noqa: E402
from bench.processes import quietly  # noqa: E402
from bench.report import write_section  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", 15))
LIMIT = markdown.HIGHLIGHT_LIMIT
DENSE = "function f(a, b) { return a < b && c > d ? 'x' : \"y\"; }\n"
DENSE_BLOCK = "```js\n" + (DENSE * (LIMIT // len(DENSE)))[: LIMIT - 1] + "\n```\n\n"
PYTHON = Path(markdown.__file__).read_text().splitlines()[40:100]
ANSWERS = {
    "typical (60 lines of Python)": "Here it is:\n\n```python\n" + "\n".join(PYTHON) + "\n```\n",
    f"one block of dense JavaScript, {LIMIT:,} characters": DENSE_BLOCK,
    "hostile: ten such blocks": DENSE_BLOCK * 10,
}
LIMITS = {"plain": 0, "highlighted": LIMIT, "highlighted, no limit": 10**9}
PLAIN_AND_HIGHLIGHTED = {"plain": 0, "highlighted": LIMIT}


def median_ms(answer: str, limit: int) -> float:
    markdown.HIGHLIGHT_LIMIT = limit
    try:
        markdown.render_markdown(answer)  # lexers imported, caches warm
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            markdown.render_markdown(answer)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000
    finally:
        markdown.HIGHLIGHT_LIMIT = LIMIT


def measure(answer: str, limits: dict[str, int], shares: list[float]) -> dict[str, float]:
    return {
        label: quietly(partial(median_ms, answer, limit), shares) for label, limit in limits.items()
    }


def main() -> None:
    shares: list[float] = []
    figures = {
        name: measure(answer, LIMITS if "hostile" in name else PLAIN_AND_HIGHLIGHTED, shares)
        for name, answer in ANSWERS.items()
    }
    rows = []
    for name, measured in figures.items():
        cells = [f"{measured[label]:.1f} ms" if label in measured else "–" for label in LIMITS]
        rows.append(f"| {name} | {len(ANSWERS[name]):,} | {' | '.join(cells)} |")
    write_section(
        "Answers' Markdown: highlighted code against plain",
        f"""`bench/markdown.py`: `render_markdown` (markdown-it, Pygments, bleach), median of
{REPEATS} renders; "plain" is the same with nothing highlighted. Other processes took at most
{max(shares):.0%} of the CPU while these were measured.

| answer | characters | plain | highlighted | highlighted, no limit |
|---|---|---|---|---|
{chr(10).join(rows)}

The cleaner's time grows with the spans (Pygments itself is a fraction of it), so highlighting
costs most for dense code, and the limit keeps one answer's share of it bounded.""",
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
