"""What must not leave the node: finding private values in text.

Pure Python, no network, no model. Each kind is a cheap regular expression that finds
candidates, then a check in Python (a checksum, a shape rule) that decides. Conservative where
a kind has no checksum: a phone number is not a date, an amount or a version.

Every repetition in every pattern is bounded and no two adjacent parts can match the same
characters, so a text is scanned in time proportional to its length, whatever it holds.
A Finding carries the value: it is for the redaction vault only and is never logged.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from apps.privacy import checksums, numbers, places, tokens
from apps.privacy.terms import Terms, compiled_terms


class Kind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    IBAN = "iban"
    CARD = "card"
    IP = "ip"
    ADDRESS = "address"  # a street address or a postal code with its town
    BITCOIN = "bitcoin"
    LIGHTNING = "lightning"
    NOSTR = "nostr"
    API_KEY = "api_key"  # an API key or token
    NAME = "name"  # a household member's name or display name
    TERM = "term"  # a word from the owner's list


@dataclass(frozen=True)
class Finding:
    kind: Kind
    start: int
    end: int
    value: str = field(repr=False)  # never in a log line, not even through repr()


Span = tuple[int, int]
Finder = Callable[[str], Iterator[Span]]
# Keys, addresses, invoices and tokens are long runs of word characters: their patterns are
# tried only inside such runs (found once per text) instead of at every position of it.
RunFinder = Callable[[str, list[Span]], Iterator[Span]]

# On a tie in length, the kind verified by a checksum wins over the one guessed by shape.
SPECIFICITY = [
    Kind.NOSTR,
    Kind.LIGHTNING,
    Kind.BITCOIN,
    Kind.IBAN,
    Kind.CARD,
    Kind.API_KEY,
    Kind.EMAIL,
    Kind.IP,
    Kind.PHONE,
    Kind.ADDRESS,
    Kind.NAME,
    Kind.TERM,
]


def detect(text: str, *, terms: Terms, enabled: frozenset[Kind] | None = None) -> list[Finding]:
    """Every private value found, non-overlapping, in order. Where two overlap the longer wins,
    on equal length the more specific kind."""
    kinds = frozenset(Kind) if enabled is None else enabled
    found: list[Finding] = []
    for kind, finder in _FINDERS.items():
        if kind in kinds:
            found.extend(Finding(kind, s, e, text[s:e]) for s, e in finder(text))
    runs = long_runs(text) if kinds & _RUN_FINDERS.keys() else []
    for kind, run_finder in _RUN_FINDERS.items():
        if kind in kinds and runs:
            found.extend(Finding(kind, s, e, text[s:e]) for s, e in run_finder(text, runs))
    for kind, words in ((Kind.NAME, terms.names), (Kind.TERM, terms.words)):
        pattern = compiled_terms(words) if kind in kinds else None
        if pattern is not None:
            found.extend(
                Finding(kind, m.start(), m.end(), m.group()) for m in pattern.finditer(text)
            )
    return _without_overlaps(found)


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    rank = {kind: index for index, kind in enumerate(SPECIFICITY)}
    found.sort(key=lambda f: (f.start - f.end, rank[f.kind], f.start))
    starts: list[int] = []
    kept: list[Finding] = []  # sorted by start, parallel to `starts`
    for finding in found:
        index = bisect.bisect_left(starts, finding.start)
        if index > 0 and kept[index - 1].end > finding.start:
            continue
        if index < len(kept) and kept[index].start < finding.end:
            continue
        starts.insert(index, finding.start)
        kept.insert(index, finding)
    return kept


# --- e-mail ----------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}(?![\w-])"
)


# An address stands within these many characters before and after its @.
_EMAIL_BEFORE, _EMAIL_AFTER = 64, 1 + 253 + 1 + 24 + 1


def _emails(text: str) -> Iterator[Span]:
    for match in _around_ats(text):
        local, domain = match.group().split("@", 1)
        if ".." in match.group() or local[0] == "." or local[-1] == ".":
            continue
        if domain[0] in ".-" or ".-" in domain or "-." in domain:
            continue
        yield match.span()


def _around_ats(text: str) -> Iterator[re.Match[str]]:
    """The pattern's matches, looked for only near each @ (most of a text is far from one)."""
    window_start = window_end = -1
    at = text.find("@")
    while at != -1:
        start, end = max(at - _EMAIL_BEFORE, 0), min(at + _EMAIL_AFTER, len(text))
        if start > window_end:
            if window_end != -1:
                yield from _EMAIL.finditer(text, window_start, window_end)
            window_start = start
        window_end = end
        at = text.find("@", at + 1)
    if window_end != -1:
        yield from _EMAIL.finditer(text, window_start, window_end)


# --- IP addresses ----------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?![\w]|\.\d)", re.ASCII)
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{1,44}(?![\w:])")
# Every IPv6 address with four hex digits holds "::" or a hex digit on both sides of a colon.
_IPV6_HINT = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f:]|::")


def _ips(text: str) -> Iterator[Span]:
    """Loopback and unspecified addresses (127.0.0.1, 0.0.0.0, ::1) name no one's network and
    fill questions about code: they stay."""
    for match in _IPV4.finditer(text):
        if not _says_nothing(match.group()):
            yield match.span()
    if text.count(":") < 2 or not _IPV6_HINT.search(text):
        return
    for match in _IPV6_CANDIDATE.finditer(text):
        candidate = match.group().rstrip(".:")
        if candidate.count(":") >= 2 and _ipv6_valid(candidate) and not _says_nothing(candidate):
            yield match.start(), match.start() + len(candidate)


def _says_nothing(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    return parsed.is_loopback or parsed.is_unspecified


def _ipv6_valid(candidate: str) -> bool:
    """At least four hex digits: "::" and "a::b" in prose are not addresses."""
    if sum(char not in ":." for char in candidate) < 4:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


# --- Bitcoin, Lightning, Nostr ---------------------------------------------------------------

_BASE58_ADDRESS = re.compile(r"[13mn2](?<![A-Za-z0-9].)[1-9A-HJ-NP-Za-km-z]{25,34}(?![A-Za-z0-9])")
# Base58check version bytes: P2PKH and P2SH on mainnet, then on testnet/regtest.
_ADDRESS_VERSIONS = frozenset({0x00, 0x05, 0x6F, 0xC4})
# An extended public key gives away every address of a wallet: as private as an address.
_EXTENDED_PUBLIC_KEY = re.compile(
    r"(?<![A-Za-z0-9])[xtyzuvYZUV]pub[1-9A-HJ-NP-Za-km-z]{107}(?![A-Za-z0-9])"
)
_SEGWIT_ADDRESS = re.compile(
    r"(?<![A-Za-z0-9])(?:bc|tb|bcrt)1[02-9ac-hj-np-z]{8,87}(?![A-Za-z0-9])", re.IGNORECASE
)
# The amount is part of the human-readable part: lnbc2500u1...; signet is lntbs.
_INVOICE = re.compile(
    r"(?<![A-Za-z0-9])ln(?:bcrt|bc|tbs|tb)\d{0,20}[munp]?1[02-9ac-hj-np-z]{6,8000}(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_NOSTR = re.compile(
    r"(?<![A-Za-z0-9])(?:npub|nprofile)1[02-9ac-hj-np-z]{6,2000}(?![A-Za-z0-9])", re.IGNORECASE
)


# Maximal, so that a pattern's look-ahead at a run's end (where the search is cut) sees what
# it would see in the whole text: nothing more of [\w-]. Its look-behind sees the text before.
_LONG_RUN = re.compile(r"[\w-]{11,}")


def long_runs(text: str) -> list[Span]:
    """Where anything 11 characters or longer without a space or punctuation stands: the
    shortest key, address or token found in runs is that long (an invoice, bc1 + 8)."""
    return [match.span() for match in _LONG_RUN.finditer(text)]


def in_runs(pattern: re.Pattern[str], text: str, runs: list[Span]) -> Iterator[re.Match[str]]:
    for start, end in runs:
        yield from pattern.finditer(text, start, end)


def _bitcoin(text: str, runs: list[Span]) -> Iterator[Span]:
    for match in in_runs(_BASE58_ADDRESS, text, runs):
        payload = checksums.base58check_decode(match.group())
        if payload is not None and len(payload) == 21 and payload[0] in _ADDRESS_VERSIONS:
            yield match.span()
    lowered = text.lower()
    if "bc1" in lowered or "tb1" in lowered or "bcrt1" in lowered:
        for match in in_runs(_SEGWIT_ADDRESS, text, runs):
            if checksums.segwit_address_valid(match.group()):
                yield match.span()
    if "pub" not in text:
        return
    for match in in_runs(_EXTENDED_PUBLIC_KEY, text, runs):
        payload = checksums.base58check_decode(match.group())
        if payload is not None and len(payload) == 78:
            yield match.span()


def _bech32_spans(pattern: re.Pattern[str], text: str, runs: list[Span]) -> Iterator[Span]:
    for match in in_runs(pattern, text, runs):
        decoded = checksums.bech32_decode(match.group())
        if decoded is not None and not decoded.modified:
            yield match.span()


def _lightning(text: str, runs: list[Span]) -> Iterator[Span]:
    return _bech32_spans(_INVOICE, text, runs) if "ln" in text.lower() else iter(())


def _nostr(text: str, runs: list[Span]) -> Iterator[Span]:
    lowered = text.lower()
    found = "npub1" in lowered or "nprofile1" in lowered
    return _bech32_spans(_NOSTR, text, runs) if found else iter(())


_FINDERS: dict[Kind, Finder] = {
    Kind.EMAIL: _emails,
    Kind.PHONE: numbers.phones,
    Kind.IBAN: numbers.ibans,
    Kind.CARD: numbers.cards,
    Kind.IP: _ips,
    Kind.ADDRESS: places.addresses,
}
_RUN_FINDERS: dict[Kind, RunFinder] = {
    Kind.BITCOIN: _bitcoin,
    Kind.LIGHTNING: _lightning,
    Kind.NOSTR: _nostr,
    Kind.API_KEY: tokens.tokens,
}
