"""Numbers that are private: phone numbers, IBANs, payment cards.

A pattern finds a run of digits and separators that could be one; the run is then cut back,
group by group, to the longest prefix that passes the kind's rules. That is how a phone number
next to a date ("030 1234567 30.11.2026") is found without taking the date with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from apps.privacy.checksums import iban_valid, luhn_valid

Span = tuple[int, int]

_DIGITS = re.compile(r"\d+", re.ASCII)
# A number written on after the cut (30.11 -> .2026, 1,234 -> ,56) means the cut was mid-number.
_CONTINUES = re.compile(r"[.,/:-]?\d")
_DATE = re.compile(r"\d{1,2}([./-])\d{1,2}\1\d{2,4}|\d{4}-\d{1,2}-\d{1,2}")


def _longest(text: str, start: int, groups: list[Span], valid: Callable[[str], bool]) -> int | None:
    """The end of the longest prefix text[start:group end] that is valid, if any."""
    for _, end in reversed(groups):
        if _CONTINUES.match(text, end) or text[end : end + 1].isalnum():
            continue
        if valid(text[start:end]):
            return end
    return None


def _scan(
    pattern: re.Pattern[str],
    text: str,
    groups_of: re.Pattern[str],
    valid: Callable[[str], bool],
    cut: Callable[[str], str] | None = None,
) -> Iterator[Span]:
    position = 0
    while match := pattern.search(text, position):
        start = match.start()
        date = _DATE.match(text, start)
        if date:  # a date is never the start of a number of ours: skip all of it
            position = date.end()
            continue
        candidate = cut(match.group()) if cut else match.group()
        groups = [(m.start() + start, m.end() + start) for m in groups_of.finditer(candidate)]
        end = _longest(text, start, groups, valid)
        if end is None:
            position = start + 1
            continue
        yield start, end
        position = end


# --- phone numbers ---------------------------------------------------------------------------

# ASCII digits only: a number in another script is not dialled from a European keyboard, and
# the checks below do arithmetic on the characters.
_INTERNATIONAL = re.compile(r"\+(?<![\w+].)[1-9][\d ()./-]{5,24}", re.ASCII)
# `\(?0[1-9]` not after a word or a number's separator, written so that a search skips ahead
# to a "(" or a "0" (a pattern that opens with a look-behind is tried at every position).
_NATIONAL = re.compile(r"[(0](?<![\w+.,/:-].)(?:(?<=\()0)?(?<=0)[1-9][\d ()./-]{4,22}", re.ASCII)
# North American: (555) 123-4567, 555-123-4567, 555.123.4567 (area codes start at 2).
_NANP = re.compile(
    r"[(2-9](?<![\w+.,/:-].)(?:(?<=\()[2-9]\d\d\) ?|(?<=[2-9])\d\d([-.]))"
    r"\d{3}[-.]\d{4}(?![\w]|[.,/-]\d)"
)
# Seven digits, a space, and a new area code with a number after it: "030 1234567 040 7654321"
# is two numbers, "020 7946 0958" one.
_NEXT_NUMBER = re.compile(r"(?<=\d) (?=\(?0\d{1,4}\)?[ /-]?\d{4})")
_SEPARATOR = re.compile(r" ?(?:[-./]|\(|\)|\) \(?|)? ?")


def _separated_well(number: str) -> bool:
    """Single separators between digit groups (a space, -, ., /, or parentheses)."""
    gaps = re.split(r"\d+", number.lstrip("+("))
    return all(_SEPARATOR.fullmatch(gap) for gap in gaps[1:-1]) and gaps[-1] == ""


def _international_valid(number: str) -> bool:
    digits = sum(char.isdigit() for char in number)
    country = _DIGITS.match(number, 1)
    groups = len(_DIGITS.findall(number))
    if not 8 <= digits <= 15 or country is None or not _separated_well(number):
        return False
    return groups == 1 or len(country.group()) <= 4  # +49 30..., or +4930... (or +1 (555)...)


def _national_valid(number: str) -> bool:
    digits = sum(char.isdigit() for char in number)
    groups = _DIGITS.findall(number)
    if not 7 <= digits <= 13 or len(groups) < 2 or not _separated_well(number):
        return False
    return len(groups[0]) <= 5 and len(groups[-1]) >= 2 and not _DATE.fullmatch(number)


def _before_next_number(candidate: str) -> str:
    for following in _NEXT_NUMBER.finditer(candidate):
        if sum(char.isdigit() for char in candidate[: following.start()]) >= 7:
            return candidate[: following.start()]
    return candidate


def phones(text: str) -> Iterator[Span]:
    yield from _scan(_INTERNATIONAL, text, _DIGITS, _international_valid)
    yield from _scan(_NATIONAL, text, _DIGITS, _national_valid, _before_next_number)
    for match in _NANP.finditer(text):
        if match.group(1) is None or match.group().count(match.group(1)) == 2:
            yield match.span()


# --- IBANs -----------------------------------------------------------------------------------

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}[ A-Za-z0-9]{11,44}")
# The IBAN registry's length for each country: one length to check per candidate, and a
# country code that has no IBANs is not one.
_IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BI": 27,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DJ": 27,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FK": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MN": 20,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NI": 28,
    "NL": 18,
    "NO": 15,
    "OM": 23,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "RU": 33,
    "SA": 24,
    "SC": 31,
    "SD": 18,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "SO": 23,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
    "YE": 30,
}


def _iban_at(candidate: str) -> int | None:
    """The length of the IBAN the candidate starts with: its country's length in characters,
    unspaced or in groups of four."""
    length = _IBAN_LENGTHS.get(candidate[:2].upper())
    if length is None:
        return None
    compact = candidate[:length]
    characters = candidate.replace(" ", "")[:length]
    spaced = " ".join(characters[i : i + 4] for i in range(0, length, 4))
    for written in (compact, spaced):
        if candidate.startswith(written) and iban_valid(written.replace(" ", "").upper()):
            return len(written)
    return None


def ibans(text: str) -> Iterator[Span]:
    position = 0
    while match := _IBAN.search(text, position):
        length = _iban_at(match.group())
        end = match.start() + length if length else 0
        if length and not text[end : end + 1].isalnum():
            yield match.start(), end
            position = end
        else:  # an IBAN may start inside what this candidate took in
            position = match.start() + 1


# --- payment cards ---------------------------------------------------------------------------

_CARD = re.compile(r"[2-6](?<![\w.,/-].)[\d -]{11,22}", re.ASCII)
# Issuers' prefixes: Visa 4, Mastercard 51-55 and 22-27, Amex/Diners/JCB 3x, Discover/UnionPay 6.
_ISSUER = re.compile(r"4|5[1-5]|2[2-7]|3|6")


def _card_valid(candidate: str) -> bool:
    separators = {char for char in candidate if not char.isdigit()}
    digits = candidate.replace(" ", "").replace("-", "")
    groups = re.split(r"[ -]", candidate)
    if len(separators) > 1 or not 13 <= len(digits) <= 19 or not _ISSUER.match(digits):
        return False
    if separators and (len(groups[0]) != 4 or any(not 3 <= len(g) <= 6 for g in groups[1:-1])):
        return False
    return luhn_valid(digits)


def cards(text: str) -> Iterator[Span]:
    return _scan(_CARD, text, _DIGITS, _card_valid)
