"""Macaroons as L402 servers mint them: libmacaroons' v2 binary format, HMAC-SHA256 chained.

Written here from the format (not with the product's reader, so the two check each other):

    0x02, [location field], identifier field, EOS,
    per caveat: [location field], identifier field, [vid field], EOS,
    EOS, signature field

A field is its type byte (1 location, 2 identifier, 4 vid, 6 signature; 0 is EOS), its length as
an unsigned LEB128 varint, then its bytes. The signature starts as HMAC(derived key, identifier),
where the derived key is HMAC("macaroons-key-generator", root key), and each first-party caveat
chains it: HMAC(signature, caveat). The L402 identifier is big-endian
`uint16 version (0) || payment_hash[32] || token_id[32]`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass

LOCATION, IDENTIFIER, VID, SIGNATURE, EOS = 1, 2, 4, 6, 0
KEY_GENERATOR = b"macaroons-key-generator"


@dataclass(frozen=True)
class Macaroon:
    location: str
    identifier: bytes
    caveats: tuple[bytes, ...]
    signature: bytes

    @property
    def payment_hash(self) -> str:
        return self.identifier[2:34].hex()

    @property
    def token_id(self) -> str:
        return self.identifier[34:66].hex()


def l402_identifier(payment_hash: str, token_id: bytes) -> bytes:
    return struct.pack(">H", 0) + bytes.fromhex(payment_hash) + token_id


def signature_of(root_key: bytes, identifier: bytes, caveats: tuple[bytes, ...]) -> bytes:
    signature = _hmac(_hmac(KEY_GENERATOR, root_key), identifier)
    for caveat in caveats:
        signature = _hmac(signature, caveat)
    return signature


def mint(root_key: bytes, identifier: bytes, location: str, caveats: tuple[bytes, ...]) -> bytes:
    out = bytearray([2])
    out += _field(LOCATION, location.encode()) + _field(IDENTIFIER, identifier) + bytes([EOS])
    for caveat in caveats:
        out += _field(IDENTIFIER, caveat) + bytes([EOS])
    out += bytes([EOS]) + _field(SIGNATURE, signature_of(root_key, identifier, caveats))
    return bytes(out)


def parse(raw: bytes) -> Macaroon:
    """A v2 binary macaroon, or ValueError."""
    if not raw or raw[0] != 2:
        raise ValueError("not a v2 macaroon")
    try:
        fields, at = _section(raw, 1)
        caveats = []
        while raw[at] != EOS:
            caveat, at = _section(raw, at)
            caveats.append(caveat[IDENTIFIER])
        kind, signature, at = _read_field(raw, at + 1)
    except IndexError:
        raise ValueError("truncated macaroon") from None
    location = fields.get(LOCATION, b"").decode()
    identifier = fields[IDENTIFIER]
    if kind != SIGNATURE or len(signature) != 32 or at != len(raw):
        raise ValueError("bad signature field")
    return Macaroon(location, identifier, tuple(caveats), signature)


def verified(root_key: bytes, macaroon: Macaroon) -> bool:
    expected = signature_of(root_key, macaroon.identifier, macaroon.caveats)
    return hmac.compare_digest(expected, macaroon.signature)


def b64decode_any(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _field(kind: int, data: bytes) -> bytes:
    return bytes([kind]) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_field(raw: bytes, at: int) -> tuple[int, bytes, int]:
    kind, at = raw[at], at + 1
    length, shift = 0, 0
    while True:
        byte, at = raw[at], at + 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if at + length > len(raw):
        raise ValueError("field runs past the end")
    return kind, raw[at : at + length], at + length


def _section(raw: bytes, at: int) -> tuple[dict[int, bytes], int]:
    """Fields up to an EOS; returns them and the position after the EOS."""
    fields: dict[int, bytes] = {}
    while raw[at] != EOS:
        kind, data, at = _read_field(raw, at)
        fields[kind] = data
    if IDENTIFIER not in fields:
        raise ValueError("a section without an identifier")
    return fields, at + 1
