"""Finding private values: `detect` and `hard_stops` on a 2 KB prompt holding 20 of them.

The prompt is ordinary prose with a household's names, e-mail addresses, phone numbers, IBANs,
a card, addresses, Bitcoin and Lightning strings, an npub and API keys in it; the household
has six terms. REPEATS runs of each, medians in milliseconds. A foundation for bench/privacy.py
(redact and restore, against Presidio), which the privacy issue adds; this one writes nothing.

Run: .venv/bin/python bench/privacy_detect.py (BENCH_REPEATS=50 for a quick try). Prints one
line of JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.privacy.detectors import detect  # noqa: E402
from apps.privacy.hard_stops import hard_stops  # noqa: E402
from apps.privacy.terms import Terms  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", 500))
TERMS = Terms(
    names=frozenset({"Anna Müller", "Anna", "Jörg Müller", "Jörg"}),
    words=frozenset({"Lindenweg", "Acme Widgets"}),
)
PRIVATE = [
    "Anna Müller",
    "anna.mueller@example.com",
    "+49 30 1234567",
    "DE89 3704 0044 0532 0130 00",
    "4111 1111 1111 1111",
    "Hauptstraße 5",
    "10115 Berlin",
    "192.168.1.20",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
    "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1w",
    "Jörg",
    "0170-1234567",
    "GB82 WEST 1234 5698 7654 32",
    "jorg@example.org",
    "Acme Widgets",
    "12 Main Street",
    "2001:db8::8a2e:370:7334",
    "Lindenweg",
]
FILLER = (
    "Could you help me write a friendly letter to the landlord about the heating, which has "
    "not worked since 2026-11-30, and mention that we paid 1,234.56 € on 30.11.2026 at 12:30? "
)


def prompt() -> str:
    """About 2 KB: the private values spread through ordinary sentences with dates and amounts."""
    parts = [f"{FILLER[: 40 + index * 3]}, {value}." for index, value in enumerate(PRIVATE)]
    text = " ".join(parts)
    return (text + " " + FILLER * 4)[:2048]


def median_ms(run: object, repeats: int) -> float:
    assert callable(run)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings) * 1000, 3)


def main() -> None:
    text = prompt()
    findings = detect(text, terms=TERMS)
    result = {
        "bench": "privacy_detect",
        "prompt_bytes": len(text.encode()),
        "private_values": len(PRIVATE),
        "findings": len(findings),
        "detect_ms": median_ms(lambda: detect(text, terms=TERMS), REPEATS),
        "hard_stops_ms": median_ms(lambda: hard_stops(text), REPEATS),
        "repeats": REPEATS,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
