"""Keys, addresses, invoices and tokens are looked for only inside long runs of word characters
(detectors.long_runs): inside them, each pattern finds exactly what it finds in the whole text,
whatever stands around (accents, hyphens, dots, other keys)."""

from __future__ import annotations

import random
import re

import pytest

from apps.privacy import detectors, hard_stops, numbers, tokens

PIECES = [
    "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
    "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6",
    "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq",
    "Ab3dEf9hIj2lMn5pQr8tUv1xYz4AbCdEfGh",
    "xpub6CUGRUonZSQ4TWtTMmzXdrXDtypWKiKrhko4egpiMZbpiaQL2jkwSB1icqYh2cfDfVxdx4df189oLKn",
    "a" * 40,
    "é",
    "ß",
    "-",
    "_",
    ".",
    " ",
    "7",
]
PATTERNS = [
    detectors._BASE58_ADDRESS,
    detectors._SEGWIT_ADDRESS,
    detectors._EXTENDED_PUBLIC_KEY,
    detectors._INVOICE,
    detectors._NOSTR,
    tokens._BEARER,
]


def spans(matches: object) -> list[tuple[int, int]]:
    return [match.span() for match in matches]  # type: ignore[attr-defined]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda pattern: pattern.pattern[:24])
def test_a_pattern_finds_the_same_in_runs_as_in_the_whole_text(pattern: re.Pattern[str]) -> None:
    chosen = random.Random(pattern.pattern)  # noqa: S311 - the same test texts every run
    for _ in range(400):
        text = "".join(chosen.choice(PIECES) for _ in range(chosen.randint(1, 9)))
        runs = detectors.long_runs(text)

        assert spans(detectors.in_runs(pattern, text, runs)) == spans(pattern.finditer(text))


# Patterns written to open with a character class (so a search skips ahead to it), each beside
# the plain form it stands for.
PLAIN_AND_FAST = [
    (
        r"(?<![\w+.,/:-])\(?0[1-9][\d ()./-]{4,22}",
        numbers._NATIONAL,
        "0123456789 ()./-+abcXYZ,:\n",
    ),
    (
        r"(?<![A-Za-z0-9])[xtyzuvYZUV]prv[1-9A-HJ-NP-Za-km-z]{107}(?![A-Za-z0-9])",
        hard_stops._EXTENDED_KEY,
        "xprv" + "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz" * 2 + " .-é",
    ),
    (
        r"(?<![A-Za-z0-9])[59KLc][1-9A-HJ-NP-Za-km-z]{50,51}(?![A-Za-z0-9])",
        hard_stops._WIF,
        "59KLc" + "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz" + " .-é",
    ),
]


@pytest.mark.parametrize(("plain", "fast", "alphabet"), PLAIN_AND_FAST)
def test_a_pattern_written_for_speed_finds_what_its_plain_form_finds(
    plain: str, fast: re.Pattern[str], alphabet: str
) -> None:
    chosen = random.Random(plain)  # noqa: S311 - the same test texts every run
    plain_pattern = re.compile(plain, fast.flags)
    for _ in range(3000):
        text = "".join(chosen.choice(alphabet) for _ in range(chosen.randint(1, 160)))

        assert spans(fast.finditer(text)) == spans(plain_pattern.finditer(text))
