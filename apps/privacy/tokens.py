"""API keys and tokens: the shapes providers give them (sk-..., sov_..., JWTs, AWS key ids)
and, for the rest, bearer-like strings that look random.

Hex strings are not taken for tokens: transaction ids, payment hashes and commit ids are hex,
are everywhere in a Bitcoin household's questions, and are not secrets. The hex secrets that
matter, the preimages of live tokens, are hard stops (hard_stops.py), checked by value.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

Span = tuple[int, int]

_SHAPED = re.compile(
    r"(?<![\w-])(?:"
    r"sk-[A-Za-z0-9_-]{20,300}"  # OpenAI, Anthropic (sk-ant-...), OpenRouter (sk-or-...)
    r"|sov_[A-Za-z0-9_-]{16,300}"  # Sovereign's own API keys
    r"|eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,8000}\.[A-Za-z0-9_-]{0,2000}"  # JWT
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r")(?![\w-])"
)
_BEARER = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{32,512}(?![\w-])")

# Bits per character of the string's own character counts. Random base62/base64url of 32+
# characters measures 4.3-5; English words run together and identifiers stay below 4.
MIN_ENTROPY = 4.0


def entropy(text: str) -> float:
    counts = Counter(text).values()
    return -sum(count / len(text) * math.log2(count / len(text)) for count in counts)


def _random_looking(candidate: str) -> bool:
    """Lower case, upper case and digits all present, and the characters spread wide."""
    has_lower = any(char.islower() for char in candidate)
    has_upper = any(char.isupper() for char in candidate)
    digits = sum(char.isdigit() for char in candidate)
    return has_lower and has_upper and digits >= 2 and entropy(candidate) >= MIN_ENTROPY


def tokens(text: str, runs: list[Span]) -> Iterator[Span]:
    """`runs`: where the text has runs of 11 or more word characters (detectors.long_runs). A
    JWT's dots part its runs, so the shaped keys are looked for in the whole text."""
    yield from (match.span() for match in _SHAPED.finditer(text))
    for start, end in runs:
        if end - start < 32:
            continue
        for match in _BEARER.finditer(text, start, end):
            if _random_looking(match.group()):
                yield match.span()
