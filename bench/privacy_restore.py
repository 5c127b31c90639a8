"""What putting the private values back costs an answer (apps/privacy/restore.py).

One run, no network, no database:

- whole restore: a 2 KB answer carrying 20 placeholders (some written as a model changes
  them), restored at once; the median of many runs;
- first token: the same answer as a stream of small tokens from an in-process backend,
  opened and read to its first token with and without `restored_events` in between, the two
  alternating so both see the same load; the median of the paired differences is what
  restoring adds to the first token's wait.

Targets (issue 15): at most 1 ms added to the first token; redact plus restore of 2 KB within
2 ms (measured whole, with the detectors, by bench/privacy.py once they exist).

Run: .venv/bin/python bench/privacy_restore.py (BENCH_RUNS=200 for a quick try). Prints one
line of JSON with the figures, in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.inference.backends.base import PRIMING, Done, Events, Token, Usage, primed  # noqa: E402
from apps.privacy.restore import restore, restored_events  # noqa: E402
from apps.privacy.vault import Vault  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "2000"))
KINDS = ["email", "phone", "iban", "name", "street"]
CHANGED = ["[{}]", "[{}]", "[{}]", "[ {} ]"]  # mostly exact, some as a model changes them


def household() -> tuple[Vault, str]:
    """A vault of 20 values and a 2 KB answer naming each once, in prose."""
    vault = Vault()
    placeholders = []
    for number in range(20):
        kind = KINDS[number % len(KINDS)]
        label = vault.placeholder(kind, f"{kind}-value-{number}@household")[1:-1]
        written = CHANGED[number % len(CHANGED)].format(label)
        placeholders.append(written.lower() if number % 7 == 3 else written)
    filler = "The model answers in plain prose, with [a note] and (brackets) here and there. "
    parts = []
    for written in placeholders:
        parts.append(filler[: 2048 // 20 - len(written) - 1] + " " + written)
    answer = "".join(parts)
    return vault, answer[:2048] if len(answer) >= 2048 else answer.ljust(2048, ".")


def whole_restore_ms(vault: Vault, answer: str) -> float:
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        restore(vault, answer)
        times.append(time.perf_counter() - began)
    return median_ms(times)


async def backend(tokens: list[str]) -> Events:
    """An answer as a backend hands it out: started, each token after a turn of the loop."""

    async def events() -> Events:
        yield PRIMING
        for text in tokens:
            await asyncio.sleep(0)
            yield Token(text)
        yield Done("stop", Usage(10, len(tokens)))

    return await primed(events())


async def first_token_s(tokens: list[str], vault: Vault | None) -> float:
    began = time.perf_counter()
    events = await backend(tokens)
    if vault is not None:
        events = await restored_events(events, vault)
    await anext(events)
    waited = time.perf_counter() - began
    await events.aclose()
    return waited


async def first_token_ms(vault: Vault, answer: str) -> tuple[float, float, float]:
    tokens = [answer[start : start + 4] for start in range(0, len(answer), 4)]
    plain, restored = [], []
    for _ in range(RUNS):
        plain.append(await first_token_s(tokens, None))
        restored.append(await first_token_s(tokens, vault))
    added = [after - before for before, after in zip(plain, restored, strict=True)]
    return median_ms(plain), median_ms(restored), median_ms(added)


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def main() -> None:
    vault, answer = household()
    found = restore(vault, answer).text.count("@household")  # each placeholder came back
    plain, restored, added = asyncio.run(first_token_ms(vault, answer))
    figures = {
        "bench": "privacy_restore",
        "answer_bytes": len(answer.encode()),
        "placeholders": found,
        "runs": RUNS,
        "whole_restore_median_ms": round(whole_restore_ms(vault, answer), 4),
        "first_token_plain_median_ms": round(plain, 4),
        "first_token_restored_median_ms": round(restored, 4),
        "first_token_added_median_ms": round(added, 4),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
