"""What is never sent, not even redacted: the keys to the household's money and identity.

A BIP-39 seed phrase, a Nostr private key (nsec), an extended private key (xprv, tprv, ...) or
the preimage of a live token stops the request. The Stop says what was found and where, so the
person can be told; its message never contains the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from mnemonic import Mnemonic

from apps.privacy import checksums

SEED_LENGTHS = (12, 15, 18, 21, 24)
MIN_SEED_WORDS = SEED_LENGTHS[0]


class StopKind(StrEnum):
    SEED_PHRASE = "seed_phrase"
    NSEC = "nsec"
    EXTENDED_PRIVATE_KEY = "extended_private_key"
    PRIVATE_KEY = "private_key"  # a single key in wallet import format (WIF)
    PREIMAGE = "preimage"


_DESCRIPTIONS = {
    StopKind.SEED_PHRASE: "a wallet seed phrase (BIP-39 words)",
    StopKind.NSEC: "a Nostr private key (nsec)",
    StopKind.EXTENDED_PRIVATE_KEY: "an extended private key of a wallet",
    StopKind.PRIVATE_KEY: "a Bitcoin private key (WIF)",
    StopKind.PREIMAGE: "the proof of payment (preimage) of a live token",
}


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    start: int
    end: int
    # False for a key whose checksum fails: one mistyped character of an nsec or xprv is
    # found again by trying every position, so the shape alone stops it.
    verified: bool

    @property
    def message(self) -> str:
        """For the person who wrote it: what was found, never the value."""
        return (
            f"Not sent: the message contains {_DESCRIPTIONS[self.kind]}. Remove it and send again."
        )


def hard_stops(text: str, *, secrets: frozenset[str] = frozenset()) -> list[Stop]:
    """Every hard stop in the text, in order. `secrets` are the 64-hex preimages of the
    household's live tokens."""
    found = _seed_phrases(text) + _nsecs(text) + _extended_keys(text) + _wif_keys(text)
    found += _preimages(text, secrets)
    return sorted(found, key=lambda stop: (stop.start, stop.end))


# --- BIP-39 seed phrases ---------------------------------------------------------------------


@cache
def bip39_words() -> frozenset[str]:
    """The English wordlist as the `mnemonic` package (Trezor's reference) ships it."""
    text = resources.files("mnemonic").joinpath("wordlist/english.txt").read_text("utf-8")
    return frozenset(text.split())


@cache
def _mnemonic() -> Mnemonic:
    return Mnemonic("english")


_WORD = re.compile(r"[A-Za-z]+")
# Between two words of a phrase: spaces, line breaks, commas, and numbering ("1. abandon 2. ...").
_GAP = re.compile(r"[\s,;]*(?:\d{1,2}[.):]?[\s,;]*)?")
_MAX_GAP = 12


def _seed_phrases(text: str) -> list[Stop]:
    """12 or more wordlist words in a row (a 13-word run holds a 12-word phrase), checksum
    valid or not: a phrase with one word mistyped is still the wallet."""
    words = bip39_words()
    if _longest_listed(text, words) < MIN_SEED_WORDS:
        return []  # most texts: the words alone rule a phrase out, before any gap is read
    stops: list[Stop] = []
    run_start = run_end = run_length = 0
    for match in _WORD.finditer(text):
        listed = match.group().lower() in words
        if listed and run_length and _is_gap(text, run_end, match.start()):
            run_length, run_end = run_length + 1, match.end()
            continue
        if run_length >= MIN_SEED_WORDS:
            stops.append(_seed_stop(text, run_start, run_end))
        run_start, run_end, run_length = match.start(), match.end(), int(listed)
    if run_length >= MIN_SEED_WORDS:
        stops.append(_seed_stop(text, run_start, run_end))
    return stops


def _longest_listed(text: str, words: frozenset[str]) -> int:
    """The most wordlist words in a row, whatever stands between them: a phrase has at least
    as many (its gaps hold no letter, so its words are consecutive words of the text)."""
    longest = current = 0
    for word in _WORD.findall(text):
        current = current + 1 if word.lower() in words else 0
        longest = max(longest, current)
    return longest


def _seed_stop(text: str, start: int, end: int) -> Stop:
    """Verified when the words are a whole phrase whose BIP-39 checksum holds."""
    phrase = [word.lower() for word in _WORD.findall(text, start, end)]
    verified = len(phrase) in SEED_LENGTHS and _mnemonic().check(" ".join(phrase))
    return Stop(StopKind.SEED_PHRASE, start, end, verified=verified)


def _is_gap(text: str, start: int, end: int) -> bool:
    if end - start > _MAX_GAP or start == end:
        return False
    return _GAP.fullmatch(text, start, end) is not None


# --- nsec and extended private keys ----------------------------------------------------------

# 32 bytes in bech32 are 52 characters, with the checksum 58.
_NSEC = re.compile(r"(?<![A-Za-z0-9])nsec1[02-9ac-hj-np-z]{58}(?![A-Za-z0-9])", re.IGNORECASE)
# xprv/tprv (BIP-32), yprv/uprv (BIP-49), zprv/vprv (BIP-84), Yprv/Zprv/Uprv/Vprv (multisig):
# 78 bytes and a 4-byte checksum are always 111 base58 characters.
# Each pattern opens with its first character's class, its look-behind after it: a search then
# skips ahead to those characters instead of trying the look-behind at every position.
_EXTENDED_KEY = re.compile(
    r"[xtyzuvYZUV](?<![A-Za-z0-9].)prv[1-9A-HJ-NP-Za-km-z]{107}(?![A-Za-z0-9])"
)


def _nsecs(text: str) -> list[Stop]:
    stops = []
    for match in _NSEC.finditer(text):
        decoded = checksums.bech32_decode(match.group())
        verified = decoded is not None and decoded.hrp == "nsec" and not decoded.modified
        stops.append(Stop(StopKind.NSEC, *match.span(), verified=verified))
    return stops


def _extended_keys(text: str) -> list[Stop]:
    stops = []
    for match in _EXTENDED_KEY.finditer(text):
        payload = checksums.base58check_decode(match.group())
        # 4 version bytes, depth, fingerprint, child number, chain code, 0x00 + 32-byte key.
        verified = payload is not None and len(payload) == 78 and payload[45] == 0
        stops.append(Stop(StopKind.EXTENDED_PRIVATE_KEY, *match.span(), verified=verified))
    return stops


# Wallet import format: 0x80 (mainnet) or 0xEF (testnet), 32 bytes, 0x01 when compressed. Its
# shape alone is too common a string to stop on, so only a valid checksum stops it.
_WIF = re.compile(r"[59KLc](?<![A-Za-z0-9].)[1-9A-HJ-NP-Za-km-z]{50,51}(?![A-Za-z0-9])")


def _wif_keys(text: str) -> list[Stop]:
    stops = []
    for match in _WIF.finditer(text):
        payload = checksums.base58check_decode(match.group())
        if payload is None or payload[0] not in (0x80, 0xEF):
            continue
        if len(payload) == 33 or (len(payload) == 34 and payload[33] == 1):
            stops.append(Stop(StopKind.PRIVATE_KEY, *match.span(), verified=True))
    return stops


# --- preimages of live tokens ----------------------------------------------------------------


def _preimages(text: str, secrets: frozenset[str]) -> list[Stop]:
    if not secrets:
        return []
    lowered = text.lower()  # hex is written in either case
    stops = []
    for secret in secrets:
        needle = secret.lower()
        position = lowered.find(needle)
        while len(needle) == 64 and position != -1:
            stops.append(Stop(StopKind.PREIMAGE, position, position + 64, verified=True))
            position = lowered.find(needle, position + 64)
    return stops
