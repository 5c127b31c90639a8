"""Keeps docs/benchmarks.md: each benchmark owns one `## ` section and rewrites only it."""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by a script in `bench/`, which measures the things it compares\n"
    "side by side in one run on one machine. Compare the ratios, not the absolute times.\n"
)


def write_section(title: str, body: str) -> None:
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    measured = f"_Measured {datetime.date.today()} on {machine}._"
    section = f"## {title}\n\n{measured}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    BENCHMARKS.parent.mkdir(exist_ok=True)
    BENCHMARKS.write_text(text)
