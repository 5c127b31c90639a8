"""Street addresses and postal codes, where they are recognisable by their shape alone.

Conservative on purpose: a capitalised word after a five-digit number is as often "12000 Euro"
as "10115 Berlin", so a German-style postal code counts only where an address puts it (after a
street, at the start of a line, or after a comma, and not before a unit or currency). The
household's own street and town belong in the owner's list of terms, which finds them anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Span = tuple[int, int]

_WORD = r"[A-ZÄÖÜ][a-zäöüß]{1,30}"
# Hauptstraße 5, Berliner Straße 12a, Lindenweg 3, Am Markt is not recognisable and is left.
_GERMAN_SUFFIXES = r"(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|chaussee)"
_GERMAN_WORDS = r"(?:Straße|Strasse|Str\.|Weg|Gasse|Platz|Allee|Ring|Damm|Ufer|Chaussee)"
# Every pattern starts with a character class and looks behind it (`X(?<!\w.)`) rather than
# before it: the regex engine then skips ahead to candidate characters instead of trying every
# position, a third of the time on ordinary text.
# Two words only when the first is an adjective (Berliner, Lange), not an article ("Der Weg 5").
_GERMAN_STREET = re.compile(
    rf"[A-ZÄÖÜ](?<!\w.)(?:"
    rf"[a-zäöüß]{{1,30}}{_GERMAN_SUFFIXES}"
    rf"|[a-zäöüß]{{1,30}}-(?:{_WORD}-){{0,2}}{_GERMAN_WORDS}"
    rf"|(?!(?<=D)(?:er|ie|as|en|em) )[a-zäöüß]{{0,30}}er? {_GERMAN_WORDS})"
    r" \d{1,4}(?:[ ]?[a-z])?(?![\w.,]?\d)"
)
# 12 Main Street, 221B Baker St., 1600 Pennsylvania Avenue
_ENGLISH_WORDS = (
    r"(?:Street|St\.?|Road|Rd\.?|Avenue|Ave\.?|Lane|Ln\.?|Drive|Boulevard|Blvd\.?|Way|Court"
    r"|Place|Terrace|Close|Crescent|Square|Gardens)"
)
_ENGLISH_STREET = re.compile(
    rf"\d(?<![\w.,].)\d{{0,4}}[A-Za-z]? (?:{_WORD} ){{1,3}}{_ENGLISH_WORDS}(?!\w)"
)

# After a street: "Hauptstraße 5, 10115 Berlin" / "12 Main Street\nSpringfield, IL 62704".
_TOWN = rf"{_WORD}(?:[ -]{_WORD}){{0,2}}"
_POSTAL_TOWN = re.compile(rf"(?:(?<=,)|^)[ \t]{{0,4}}\d{{5}} {_TOWN}(?=[ \t]*(?:$|[,.;]))", re.M)
_NOT_TOWNS = frozenset(
    {
        "NOT_TOWNS",
        "Euro",
        "Euros",
        "Dollar",
        "Dollars",
        "Pfund",
        "Franken",
        "Sats",
        "Satoshi",
        "Satoshis",
        "Bitcoin",
        "Stück",
        "Mal",
        "Jahre",
        "Jahren",
        "Tage",
        "Tagen",
        "Stunden",
        "Minuten",
        "Sekunden",
        "Meter",
        "Kilometer",
        "Menschen",
        "Leute",
        "Einwohner",
        "Besucher",
        "Mitglieder",
        "Punkte",
        "Seiten",
        "Wörter",
        "Zeichen",
        "Bytes",
        "Tokens",
        "Items",
    }
)
# US state and ZIP: "Springfield, IL 62704" / "IL 62704-1234".
_US_ZIP = re.compile(r"(?<=, )[A-Z]{2} \d{5}(?:-\d{4})?(?!\w)")
# UK postcodes: SW1A 1AA, M1 1AE, B33 8TH, CR2 6XH, DN55 1PT.
_UK_POSTCODE = re.compile(r"[A-Z](?<![\w-].)[A-Z]?\d[A-Z\d]? \d[ABD-HJLNP-UW-Z]{2}(?![\w-])")


def addresses(text: str) -> Iterator[Span]:
    yield from (match.span() for match in _GERMAN_STREET.finditer(text))
    yield from (match.span() for match in _ENGLISH_STREET.finditer(text))
    for match in _POSTAL_TOWN.finditer(text):
        digits = re.search(r"\d{5}", match.group())
        assert digits is not None  # the pattern requires them
        if match.group().split()[1] not in _NOT_TOWNS:
            yield match.start() + digits.start(), match.end()
    yield from (match.span() for match in _US_ZIP.finditer(text))
    yield from (match.span() for match in _UK_POSTCODE.finditer(text))
