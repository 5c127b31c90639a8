"""The node's own L402 macaroons: minted, read and verified (libmacaroons' v2 binary format).

    0x02, location field, identifier field, EOS,
    per first-party caveat: identifier field, EOS,
    EOS, signature field

A field is its type byte (1 location, 2 identifier, 4 vid, 6 signature; 0 ends a section), its
length as an unsigned LEB128 varint, then its bytes. The signature starts as HMAC-SHA256(derived
key, identifier), the derived key being HMAC-SHA256("macaroons-key-generator", root key), and
each caveat chains it: HMAC-SHA256(signature, caveat). Aperture's identifier is big-endian
`uint16 version (0) || payment_hash[32] || token_id[32]`; its caveats are `services=NAME:TIER`
and `NAME_valid_until=<unix seconds>`.

The root key is 32 random bytes made once, owner-only, in the data directory. It is written
without reading the tests' double (tests/providers/doubles/macaroons.py): each checks the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from dataclasses import dataclass

from django.conf import settings

from sovereign.environment import secret_file

LOCATION, IDENTIFIER, VID, SIGNATURE, END = 1, 2, 4, 6, 0
KEY_GENERATOR = b"macaroons-key-generator"
VERSION = 0
IDENTIFIER_BYTES = 2 + 32 + 32
SERVICE = "sovereign"
SERVICES_CAVEAT = f"services={SERVICE}:0"
VALID_UNTIL = f"{SERVICE}_valid_until="
LOCATION_NAME = "sovereign"
ROOT_KEY_FILE = "l402_root_key"


class MacaroonRefused(Exception):
    """Not a macaroon this node minted, or one it no longer honours; the message says why."""


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


def root_key() -> bytes:
    """The node's macaroon root key: made on first use, kept owner-only in the data directory."""
    text = secret_file(settings.DATA_DIR / ROOT_KEY_FILE, lambda: secrets.token_hex(32))
    return bytes.fromhex(text)


def derived_key(purpose: str) -> bytes:
    """A key for another use (MPP challenge ids), never the root key itself."""
    return _hmac(root_key(), purpose.encode())


def identifier_for(payment_hash: str, token_id: str) -> bytes:
    return struct.pack(">H", VERSION) + bytes.fromhex(payment_hash) + bytes.fromhex(token_id)


def mint(payment_hash: str, token_id: str, valid_until: int) -> bytes:
    """A macaroon for one token, bound to its invoice's payment hash, good until `valid_until`."""
    identifier = identifier_for(payment_hash, token_id)
    caveats = (SERVICES_CAVEAT.encode(), f"{VALID_UNTIL}{valid_until}".encode())
    return serialised(Macaroon(LOCATION_NAME, identifier, caveats, b""), root_key())


def serialised(macaroon: Macaroon, key: bytes) -> bytes:
    out = bytearray([2])
    out += _field(LOCATION, macaroon.location.encode()) + _field(IDENTIFIER, macaroon.identifier)
    out.append(END)
    for caveat in macaroon.caveats:
        out += _field(IDENTIFIER, caveat) + bytes([END])
    out.append(END)
    out += _field(SIGNATURE, signature_of(key, macaroon.identifier, macaroon.caveats))
    return bytes(out)


def signature_of(key: bytes, identifier: bytes, caveats: tuple[bytes, ...]) -> bytes:
    signature = _hmac(_hmac(KEY_GENERATOR, key), identifier)
    for caveat in caveats:
        signature = _hmac(signature, caveat)
    return signature


def parse(raw: bytes) -> Macaroon:
    """A v2 binary macaroon, or MacaroonRefused."""
    if not raw or raw[0] != 2:
        raise MacaroonRefused("The token is not a version 2 macaroon.")
    try:
        header, position = _section(raw, 1)
        caveats: list[bytes] = []
        while raw[position] != END:
            caveat, position = _section(raw, position)
            if VID in caveat:
                raise MacaroonRefused("The macaroon has a third-party caveat; none is issued.")
            caveats.append(caveat[IDENTIFIER])
        kind, signature, position = _field_read(raw, position + 1)
    except IndexError:
        raise MacaroonRefused("The macaroon is cut short.") from None
    if kind != SIGNATURE or len(signature) != 32 or position != len(raw):
        raise MacaroonRefused("The macaroon's signature field is malformed.")
    location = header.get(LOCATION, b"").decode(errors="replace")
    return Macaroon(location, header[IDENTIFIER], tuple(caveats), signature)


def verified(text: str, now: float | None = None) -> Macaroon:
    """The macaroon in `text` (base64, standard or URL-safe, padded or not) if this node minted
    it, its identifier is an L402 one and every caveat holds now; else MacaroonRefused."""
    macaroon = parse(b64decode_any(text))
    expected = signature_of(root_key(), macaroon.identifier, macaroon.caveats)
    if not hmac.compare_digest(expected, macaroon.signature):
        raise MacaroonRefused("The macaroon's signature does not check out.")
    identifier = macaroon.identifier
    if len(identifier) != IDENTIFIER_BYTES or struct.unpack(">H", identifier[:2])[0] != VERSION:
        raise MacaroonRefused("The macaroon's identifier is not an L402 version 0 one.")
    for caveat in macaroon.caveats:
        _caveat_holds(caveat.decode(errors="replace"), time.time() if now is None else now)
    return macaroon


def _caveat_holds(caveat: str, now: float) -> None:
    """Every caveat must be one this node understands and satisfies: an unknown condition is
    refused, never ignored (a caveat can only narrow what a macaroon allows)."""
    if caveat == SERVICES_CAVEAT:
        return
    if caveat.startswith(VALID_UNTIL):
        until = caveat.removeprefix(VALID_UNTIL)
        if not until.isdigit():
            raise MacaroonRefused("The macaroon's expiry is unreadable.")
        if int(until) <= now:
            raise MacaroonRefused("The macaroon has expired.")
        return
    if caveat.startswith("services="):
        raise MacaroonRefused("The macaroon is for another service.")
    raise MacaroonRefused("The macaroon has a caveat this node does not know.")


def b64decode_any(text: str) -> bytes:
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MacaroonRefused("The macaroon is not base64.") from None


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _field(kind: int, data: bytes) -> bytes:
    return bytes([kind]) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_read(raw: bytes, position: int) -> tuple[int, bytes, int]:
    kind, position = raw[position], position + 1
    length, shift = 0, 0
    while True:
        byte, position = raw[position], position + 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if shift > 63:
            raise MacaroonRefused("The macaroon has an oversized field length.")
    if position + length > len(raw):
        raise MacaroonRefused("A macaroon field runs past its end.")
    return kind, raw[position : position + length], position + length


def _section(raw: bytes, position: int) -> tuple[dict[int, bytes], int]:
    """The fields up to an end byte, and the position after it."""
    fields: dict[int, bytes] = {}
    while raw[position] != END:
        kind, data, position = _field_read(raw, position)
        if kind in fields:
            raise MacaroonRefused("A macaroon section repeats a field.")
        fields[kind] = data
    if IDENTIFIER not in fields:
        raise MacaroonRefused("A macaroon section has no identifier.")
    return fields, position + 1
