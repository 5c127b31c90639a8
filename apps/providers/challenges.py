"""Reading a 402's payment challenges: `WWW-Authenticate` values as servers really send them.

Servers send L402 and its legacy name LSAT on separate lines (Aperture: LSAT first), or a proxy
folds them into one comma-joined line; values come quoted or not; the token is `token=` (the
current spec) or `macaroon=` (Aperture), in standard or URL-safe base64, padded or not
(lightning.md §1.3, §1.6). Everything here is untrusted input: what does not parse is skipped,
never raised, and the kinds decide what a usable challenge is.

The macaroon is only read, never trusted: its identifier may carry the payment hash the
token is bound to (`uint16 version 0 || payment_hash[32] || token_id[32]`, libmacaroons' v2
binary serialization), which must match the invoice's before anything is paid.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_NAME = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_NAME})\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')
_SCHEME = re.compile(rf"\s*({_NAME})(?=\s|,|$)")
_SEPARATORS = re.compile(r"[\s,]*")
_UNESCAPE = re.compile(r"\\(.)")
# libmacaroons v2 binary field types.
_EOS, _IDENTIFIER = 0, 2
_L402_IDENTIFIER_SIZE = 66


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: schemes are case-insensitive
    params: dict[str, str] = field(default_factory=dict)  # names in lower case, values as sent


@dataclass(frozen=True)
class L402Challenge:
    scheme: str  # the prefix the retry uses: "L402", or "LSAT" when only LSAT was offered
    token: str  # exactly as received
    invoice: str


def challenges_parsed(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in every `WWW-Authenticate` value, in order."""
    found: list[Challenge] = []
    for value in values:
        found += _challenges_in(value)
    return found


def _challenges_in(value: str) -> list[Challenge]:
    found: list[Challenge] = []
    position = _SEPARATORS.match(value, 0).end()  # type: ignore[union-attr]
    while position < len(value):
        param = _PARAM.match(value, position)
        scheme = _SCHEME.match(value, position)
        if param is not None and found:
            name, raw = param.group(1).lower(), param.group(2)
            found[-1].params.setdefault(name, _unquoted(raw))
            position = param.end()
        elif scheme is not None and param is None:
            found.append(Challenge(scheme.group(1).lower()))
            position = scheme.end()
        else:  # something unreadable: skip to the next comma
            comma = value.find(",", position)
            position = len(value) if comma < 0 else comma + 1
        position = _SEPARATORS.match(value, position).end()  # type: ignore[union-attr]
    return found


def _unquoted(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return _UNESCAPE.sub(r"\1", raw[1:-1])
    return raw


def l402_challenge(challenges: list[Challenge]) -> L402Challenge | None:
    """The L402 challenge to answer: the first `L402` one with a token and an invoice, else the
    first such `LSAT` one (then the retry says `LSAT`, as an LSAT-only server expects)."""
    usable = [
        c for c in challenges if c.scheme in ("l402", "lsat") and _token_of(c) and _invoice_of(c)
    ]
    chosen = next((c for c in usable if c.scheme == "l402"), usable[0] if usable else None)
    if chosen is None:
        return None
    return L402Challenge(chosen.scheme.upper(), _token_of(chosen), _invoice_of(chosen))


def _token_of(challenge: Challenge) -> str:
    return challenge.params.get("token") or challenge.params.get("macaroon") or ""


def _invoice_of(challenge: Challenge) -> str:
    return challenge.params.get("invoice", "")


def macaroon_payment_hash(token: str) -> str | None:
    """The payment hash an L402 macaroon's identifier carries, in hex; None when the token is
    not a v2 binary macaroon with an L402 version-0 identifier (nothing to compare then)."""
    raw = _base64_any(token.split(",")[0])
    identifier = _v2_identifier(raw) if raw else None
    if identifier is None or len(identifier) != _L402_IDENTIFIER_SIZE or identifier[:2] != b"\0\0":
        return None
    return identifier[2:34].hex()


def _base64_any(text: str) -> bytes | None:
    """Standard or URL-safe base64, with or without padding."""
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _v2_identifier(raw: bytes) -> bytes | None:
    """The identifier field of the header section of a v2 binary macaroon, or None."""
    if not raw or raw[0] != 2:
        return None
    position = 1
    while position < len(raw) and raw[position] != _EOS:
        kind, position = raw[position], position + 1
        length, position = _varint(raw, position)
        if length is None or position + length > len(raw):
            return None
        if kind == _IDENTIFIER:
            return raw[position : position + length]
        position += length
    return None


def _varint(raw: bytes, position: int) -> tuple[int | None, int]:
    value, shift = 0, 0
    while position < len(raw) and shift < 64:
        byte, position = raw[position], position + 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    return None, position
