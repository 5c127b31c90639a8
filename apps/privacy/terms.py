"""The household's own words: members' names and display names, and the owner's list (surnames,
street, town, employer, school). Matched case-insensitively on word boundaries, with German
spellings both ways (Müller / Mueller / Muller, Straße / Strasse) and possessives (Müller's,
Müllers)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

# A term shorter than this would redact ordinary text ("Al", "Jo" stay: two letters is a name).
MIN_TERM_LENGTH = 2

# Umlauts are written three ways: ü, ue, and (in ASCII-only places) u.
_UMLAUTS = {"ä": "(?:ä|ae|a)", "ö": "(?:ö|oe|o)", "ü": "(?:ü|ue|u)"}
# A term already spelled with a digraph matches the umlaut too, but not the bare vowel:
# "Bauer" must not become "Bar".
_DIGRAPHS = {"ae": "(?:ae|ä)", "oe": "(?:oe|ö)", "ue": "(?:ue|ü)"}
_SHARP_S = "(?:ß|ss)"
# Possessive and genitive endings: Müller's, Müller’s, Müllers, Hans'.
_ENDINGS = "(?:['’]s?|s|es)?"


@dataclass(frozen=True)
class Terms:
    """What the household calls itself. `names` are members' names and display names (found
    as Kind.NAME), `words` the owner's list (Kind.TERM)."""

    names: frozenset[str] = field(default_factory=frozenset)
    words: frozenset[str] = field(default_factory=frozenset)


def _usable(terms: frozenset[str]) -> list[str]:
    cleaned = {" ".join(term.split()) for term in terms}
    return sorted((term for term in cleaned if len(term) >= MIN_TERM_LENGTH), key=len)


def term_pattern(term: str) -> str:
    """One term as a regular expression body (without boundaries)."""
    lowered = term.lower()
    parts: list[str] = []
    index = 0
    while index < len(lowered):
        pair = lowered[index : index + 2]
        char = lowered[index]
        if pair in _DIGRAPHS:
            parts.append(_DIGRAPHS[pair])
            index += 2
            continue
        if pair == "ss" or char == "ß":
            parts.append(_SHARP_S)
            index += 2 if pair == "ss" else 1
            continue
        if char in _UMLAUTS:
            parts.append(_UMLAUTS[char])
        elif char == " ":
            parts.append(r"\s{1,3}")  # a line break inside a name is still the name
        else:
            parts.append(re.escape(char))
        index += 1
    return "".join(parts)


@lru_cache(maxsize=64)
def compiled_terms(terms: frozenset[str]) -> re.Pattern[str] | None:
    """All terms in one alternation, longest first so "Anna Müller" wins over "Anna"."""
    usable = _usable(terms)
    if not usable:
        return None
    body = "|".join(term_pattern(term) for term in reversed(usable))
    return re.compile(rf"(?<!\w)(?:{body}){_ENDINGS}(?!\w)", re.IGNORECASE)
