"""The checksums that tell a real account number, address or key from a string of the same
shape: Luhn (cards), mod-97 (IBANs), base58check and bech32/bech32m (Bitcoin, Lightning, Nostr).

Every function takes untrusted text and answers with a value or None; none raises.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# --- Luhn and mod-97 -------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_LETTERS_AS_NUMBERS = {
    ord(letter): str(ord(letter) - 55) for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
}


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country and check digits moved to the end, letters as 10..35, mod 97 is 1."""
    if not 15 <= len(iban) <= 34 or not iban.isascii() or not iban.isalnum():
        return False
    rearranged = (iban[4:] + iban[:4]).upper().translate(_LETTERS_AS_NUMBERS)
    return int(rearranged) % 97 == 1


# --- base58check -----------------------------------------------------------------------------

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {char: index for index, char in enumerate(BASE58_ALPHABET)}


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def base58check_decode(text: str) -> bytes | None:
    """The payload (version bytes included) when the four-byte sha256d checksum holds."""
    number = 0
    for char in text:
        index = _BASE58_INDEX.get(char)
        if index is None:
            return None
        number = number * 58 + index
    leading_zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    raw = b"\x00" * leading_zeros + body
    if len(raw) < 5:
        return None
    payload, checksum = raw[:-4], raw[-4:]
    return payload if sha256d(payload)[:4] == checksum else None


# --- bech32 (BIP-173) and bech32m (BIP-350) --------------------------------------------------

BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {char: index for index, char in enumerate(BECH32_CHARSET)}
_BECH32_CONSTANT = 1
_BECH32M_CONSTANT = 0x2BC830A3
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


@dataclass(frozen=True)
class Bech32:
    hrp: str
    data: tuple[int, ...]  # five-bit groups, checksum removed
    modified: bool  # bech32m


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            if (top >> bit) & 1:
                checksum ^= _GENERATOR[bit]
    return checksum


def bech32_decode(text: str) -> Bech32 | None:
    """Either checksum variant; no length limit, since Lightning invoices and nprofiles are
    longer than BIP-173's 90 characters (segwit addresses check their own length).
    Mixed case is accepted: a mistyped case still carries the same value."""
    lowered = text.lower()
    separator = lowered.rfind("1")
    if separator < 1 or separator + 7 > len(lowered) or not lowered.isascii():
        return None
    hrp = lowered[:separator]
    data = [_BECH32_INDEX.get(char, -1) for char in lowered[separator + 1 :]]
    if -1 in data:
        return None
    expanded = [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]
    constant = _polymod(expanded + data)
    if constant not in (_BECH32_CONSTANT, _BECH32M_CONSTANT):
        return None
    return Bech32(hrp, tuple(data[:-6]), constant == _BECH32M_CONSTANT)


def convert_bits(data: tuple[int, ...], from_bits: int, to_bits: int) -> bytes | None:
    """Regroup bits without padding (what BIP-173 requires of a witness program)."""
    accumulator = bits = 0
    result = bytearray()
    mask = (1 << to_bits) - 1
    for value in data:
        accumulator = accumulator << from_bits | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            result.append(accumulator >> bits & mask)
    if bits >= from_bits or (accumulator << (to_bits - bits)) & mask:
        return None
    return bytes(result)


SEGWIT_HRPS = frozenset({"bc", "tb", "bcrt"})


def segwit_address_valid(text: str) -> bool:
    """BIP-173/350: version 0 with bech32 and a 20 or 32 byte program, versions 1-16 with
    bech32m and 2-40 bytes, at most 90 characters."""
    decoded = bech32_decode(text) if len(text) <= 90 else None
    if decoded is None or decoded.hrp not in SEGWIT_HRPS or not decoded.data:
        return False
    version = decoded.data[0]
    program = convert_bits(decoded.data[1:], 5, 8)
    if program is None or version > 16 or not 2 <= len(program) <= 40:
        return False
    if version == 0:
        return not decoded.modified and len(program) in (20, 32)
    return decoded.modified
