"""Real BOLT11 invoices, made and read with pyln-proto, laid out as Core Lightning v26.06 does.

An invoice from the double carries the fields CLN puts in its own, in the same order
(`s`, `p`, `d`, `x`, `c`, `9`, as the recorded `lnbcrt10u1...` invoices show) and is signed with
the double's node key, so any BOLT11 reader, a real node included, accepts it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import bitstring
import coincurve
import coincurve.ecdsa
from pyln.proto.bech32 import bech32_decode, bech32_encode
from pyln.proto.invoice import (
    Invoice,
    bitarray_to_u5,
    shorten_amount,
    tagged,
    tagged_bytes,
    trim_to_bytes,
    u5_to_bitarray,
)

# The BIP-173 part of the prefix for each network lightningd runs on.
CURRENCIES = {
    "bitcoin": "bc",
    "testnet": "tb",
    "testnet4": "tb",
    "signet": "tbs",
    "regtest": "bcrt",
}
# What CLN v26.06 puts in an invoice's `9` field (transcript, `decode`: "features": "02024100").
INVOICE_FEATURES = 0x02024100
# lightningd's `invoice` default expiry, and its `cltv-final` on regtest (transcript `decode`).
DEFAULT_EXPIRY = 604800
DEFAULT_FINAL_CLTV = 10
# BOLT #11 defaults when an invoice leaves `x` or `c` out.
BOLT11_DEFAULT_EXPIRY = 3600
BOLT11_DEFAULT_FINAL_CLTV = 18
_MSAT_PER_BTC = 10**11


class InvoiceError(ValueError):
    """An invoice CLN would refuse; the text is CLN's (`common/bolt11.c`)."""


@dataclass(frozen=True)
class Bolt11:
    """A decoded invoice, with the fields CLN's `decode` reports."""

    currency: str
    created_at: int
    expiry: int
    payee: str
    amount_msat: int | None
    description: str | None
    description_hash: str | None
    min_final_cltv_expiry: int
    payment_secret: str | None
    features: str | None
    payment_hash: str
    signature: str
    routes: tuple[tuple[Any, ...], ...] = ()  # route hints: one tuple of RouteHint per route

    @property
    def expires_at(self) -> int:
        return self.created_at + self.expiry

    def decode_result(self) -> dict[str, Any]:
        """The answer to `decode`, keys in CLN's order (transcript, `decode` of `rec-1`)."""
        result: dict[str, Any] = {
            "type": "bolt11 invoice",
            "currency": self.currency,
            "created_at": self.created_at,
            "expiry": self.expiry,
            "payee": self.payee,
        }
        if self.amount_msat is not None:
            result["amount_msat"] = self.amount_msat
        if self.description is not None:
            result["description"] = self.description
        if self.description_hash is not None:
            result["description_hash"] = self.description_hash
        result["min_final_cltv_expiry"] = self.min_final_cltv_expiry
        if self.routes:
            result["routes"] = [[hop.listing() for hop in route] for route in self.routes]
        if self.payment_secret is not None:
            result["payment_secret"] = self.payment_secret
        if self.features is not None:
            result["features"] = self.features
        result["payment_hash"] = self.payment_hash
        result["signature"] = self.signature
        result["valid"] = True
        return result


def encode(
    *,
    currency: str,
    node_secret: bytes,
    payment_hash: bytes,
    payment_secret: bytes,
    amount_msat: int | None,
    description: str,
    created_at: int,
    expiry: int = DEFAULT_EXPIRY,
    final_cltv: int = DEFAULT_FINAL_CLTV,
    description_hash_only: bool = False,
    route_hints: tuple[bytes, ...] = (),
) -> str:
    """A signed BOLT11 string, tagged fields in lightningd's order."""
    hrp = "ln" + currency
    if amount_msat is not None:
        hrp += shorten_amount(Decimal(amount_msat) / _MSAT_PER_BTC)
    data = bitstring.pack("uint:35", created_at)
    data += tagged_bytes("s", payment_secret)
    data += tagged_bytes("p", payment_hash)
    if description_hash_only:
        data += tagged_bytes("h", hashlib.sha256(description.encode()).digest())
    else:
        data += tagged_bytes("d", description.encode())
    data += tagged("x", _minimal_bits(expiry))
    data += tagged("c", _minimal_bits(final_cltv))
    for hint in route_hints:  # lightningd's order: after `c`, before the features
        data += tagged_bytes("r", hint)
    data += tagged("9", _minimal_bits(INVOICE_FEATURES))
    key = coincurve.PrivateKey(node_secret)
    data += key.sign_recoverable(hrp.encode() + data.tobytes())
    return str(bech32_encode(hrp, bitarray_to_u5(data)))


def _minimal_bits(value: int) -> bitstring.Bits:
    """BOLT #11: numbers in the fewest 5-bit words (CLN's `push_varlen_field`)."""
    width = 5
    while value >> width:
        width += 5
    return bitstring.Bits(uint=value, length=width)


def canonical(text: str) -> str:
    """CLN's `to_canonical_invstr`: without a `lightning:` prefix, in lower case."""
    if text[:10].lower() == "lightning:":
        text = text[10:]
    return text.lower()


def looks_like_bolt11(text: str) -> bool:
    """`guess_type` in plugins/offers.c: a BOLT11 prefix, then digits and at most one
    multiplier before the last `1` (after a `lightning:` prefix, in either case)."""
    if text[:10].lower() == "lightning:":
        text = text[10:]
    prefix = next((p for p in ("lnbcrt", "lnbc", "lntbs", "lntb") if text.startswith(p)), None)
    if prefix is None:
        return False
    rest = text[len(prefix) :]
    if "1" not in rest:
        return False
    return re.fullmatch(r"(?:\d+[munp]?)?", rest[: rest.rindex("1")], re.IGNORECASE) is not None


def decode(text: str, *, network: str | None = None) -> Bolt11:
    """Read and check an invoice as `bolt11_decode` does; `network` pins the chain like xpay."""
    if len(text) < 8:
        raise InvoiceError("Bad bech32 string")
    try:
        hrp, _ = bech32_decode(text)
    except ValueError:
        raise InvoiceError("Bad bech32 string") from None
    return _parsed(text, _currency_of(hrp, network))


@functools.lru_cache(maxsize=4096)  # pyln-proto's signature check is slow; the result is pure
def _parsed(text: str, currency: str) -> Bolt11:
    try:
        invoice = Invoice.decode(text)
    except Exception as error:  # pyln-proto raises many kinds; CLN calls them all bad
        raise InvoiceError(f"Invalid invoice: {error}") from None
    return _bolt11_from(invoice, currency, u5_to_bitarray(bech32_decode(text)[1]))


def _currency_of(hrp: str, network: str | None) -> str:
    prefix = re.split(r"[0-9]", hrp, maxsplit=1)[0]
    if not prefix.startswith("ln"):
        raise InvoiceError(f"Prefix '{prefix}' does not start with ln")
    currency = prefix[2:]
    if network is not None and currency != CURRENCIES[network]:
        raise InvoiceError(f"Prefix {currency} is not for {network}")
    if currency not in CURRENCIES.values():
        raise InvoiceError(f"Unknown chain {currency}")
    return currency


def _bolt11_from(invoice: Invoice, currency: str, bits: bitstring.BitArray) -> Bolt11:
    tags = dict(invoice.tags)
    unknown = dict(invoice.unknown_tags)
    if invoice.paymenthash is None:
        raise InvoiceError("No valid 'p' field found")
    if "d" not in tags and "h" not in tags:
        raise InvoiceError("must have either 'd' or 'h' field")
    amount = None if invoice.amount is None else int(invoice.amount * _MSAT_PER_BTC)
    return Bolt11(
        currency=currency,
        created_at=invoice.date,
        expiry=tags.get("x", BOLT11_DEFAULT_EXPIRY),
        payee=invoice.hexpubkey,
        amount_msat=amount,
        description=tags.get("d"),
        description_hash=tags["h"].hex() if "h" in tags else None,
        min_final_cltv_expiry=invoice.min_final_cltv_expiry or BOLT11_DEFAULT_FINAL_CLTV,
        payment_secret=trim_to_bytes(unknown["s"]).hex() if "s" in unknown else None,
        features=_features_hex(unknown["9"]) if "9" in unknown else None,
        payment_hash=invoice.hexpaymenthash,
        signature=_der_signature(bits),
        routes=_route_hints(bits),
    )


def _route_hints(bits: bitstring.BitArray) -> tuple[tuple[Any, ...], ...]:
    """The `r` fields, read from the data part (timestamp, then type-length-value fields,
    then the 65-byte signature)."""
    from tests.lightningd.forwarding import RouteHint

    routes = []
    position, end = 35, len(bits) - 65 * 8
    while position + 15 <= end:
        kind = bits[position : position + 5].uint
        length = bits[position + 5 : position + 15].uint * 5
        field = bits[position + 15 : position + 15 + length]
        position += 15 + length
        if kind == 3:  # 'r' in the bech32 alphabet
            routes.append(tuple(RouteHint.read(trim_to_bytes(field))))
    return tuple(routes)


def _features_hex(field: bitstring.Bits) -> str:
    value = int(field.uint)
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big").hex()


def _der_signature(bits: bitstring.BitArray) -> str:
    """CLN shows the signature DER-encoded (transcript `decode`: "signature": "3044...")."""
    recoverable = coincurve.ecdsa.deserialize_recoverable(bits[-65 * 8 :].tobytes())
    plain = coincurve.ecdsa.recoverable_convert(recoverable)
    return coincurve.ecdsa.cdata_to_der(plain).hex()


def new_payment_secret(preimage: bytes) -> bytes:
    """A payment secret tied to the preimage, as lightningd derives one (`invoice_secret`)."""
    return hashlib.sha256(preimage + b"\x01").digest()
