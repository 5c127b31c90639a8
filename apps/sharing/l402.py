"""Payment challenges the node offers strangers, and the credentials it takes back.

Offered together on every 402, as Aperture sends them (lightning.md §1.3, §1.5A):

    WWW-Authenticate: LSAT macaroon="<b64>", invoice="<bolt11>"      legacy line first
    WWW-Authenticate: L402 macaroon="<b64>", invoice="<bolt11>"
    WWW-Authenticate: Payment id="…", realm="…", method="lightning", intent="charge",
                      request="<b64url JCS JSON>", expires="<RFC 3339>", opaque="…"

Each challenge opens its own balance with its own invoice from the household's node: the L402
token's id is the macaroon identifier's; the MPP charge's is carried in `opaque` (covered by the
challenge id, an HMAC under a key derived from the macaroon root key, so it cannot be swapped).
An L402 token is a prepaid balance of SHARING_TOKEN_REQUESTS answers at their most
(selling.token_price_msat); an MPP charge pays for one answer. A balance too short for the next
answer is offered a top-up back to that amount (for L402 a new macaroon with the same token id,
bound to the top-up's invoice), so nothing already paid is stranded; an expired balance is
offered a fresh token instead. A credited payment renews its balance (balances.py). An MPP
charge asks whole sats, as the draft's example (`{"amount":"14","currency":"sat"}`).

Credentials taken:

    Authorization: L402 <macaroon b64>:<64 lowercase hex preimage>    (or LSAT)
    Authorization: Payment <b64url JSON {"challenge": {…unchanged}, "payload": {"preimage"}}>

Reading a credential only says which balance it claims and with which preimage; whether the
balance was paid is the node's word (balances.balance_credited), asked by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from apps.providers.backends.mpp import b64url, b64url_decoded  # MPP's encoding, both sides
from apps.sharing import balances, macaroons, selling
from apps.sharing.models import Balance, Credit, Offer
from apps.wallet import services as wallet
from apps.wallet.models import Invoice

# Aperture's pattern (auth/authenticator.go); the scheme, case-insensitive as the spec says.
L402_CREDENTIAL = re.compile(r"(?i:LSAT|L402) (\S+?):([a-f0-9]{64})")
PREIMAGE = re.compile(r"[a-f0-9]{64}")
MPP_ID_FIELDS = ("realm", "method", "intent", "request", "expires", "digest", "opaque")
MPP_KEY_PURPOSE = "mpp-challenge-id"
REALM = "sovereign"
PROBLEM_TYPE = "https://paymentauth.org/problems/payment-required"
CREDENTIAL_BYTES = 8192  # a credential longer than this is not one the node issued


class CredentialRefused(Exception):
    """A credential that is not one the node issued, or does not prove its payment."""


@dataclass(frozen=True)
class Challenges:
    """What a 402 carries: the `WWW-Authenticate` values in order and the problem+json body."""

    headers: tuple[str, ...]
    problem: dict[str, Any]


@dataclass(frozen=True)
class Presented:
    """A credential that is well formed and names a balance of the node, with the invoice of
    that balance whose preimage it shows."""

    balance: Balance
    credit: Credit
    payment_hash: str
    challenge_id: str = ""  # a Payment credential's: its receipt names the challenge it paid


@dataclass(frozen=True)
class Bought:
    """What a challenge sells: a new balance, or a top-up of one the client has shown."""

    balance: Balance
    invoice: Invoice


def challenges_offered(offer: Offer, why: str, short: Presented | None = None) -> Challenges:
    """Fresh L402 and MPP challenges for one answer from `offer`, each with its own invoice.
    A client whose balance is short of this answer's most (`short`) is offered a top-up of
    that balance by what it lacks, in the scheme it used: nothing it paid is stranded."""
    l402_bought = _bought(offer, Balance.Kind.L402, short)
    mpp_bought = _bought(offer, Balance.Kind.MPP, short)
    macaroon = l402_macaroon(l402_bought)
    l402_params = f'macaroon="{macaroon}", invoice="{l402_bought.invoice.bolt11}"'
    headers = (f"LSAT {l402_params}", f"L402 {l402_params}", mpp_challenge(mpp_bought))
    problem = {
        "type": PROBLEM_TYPE,
        "title": "Payment Required",
        "status": 402,
        "detail": why,
        "price_msat": selling.token_price_msat(offer),  # what a fresh L402 token costs
        "model": offer.model,
    }
    return Challenges(headers, problem)


def invoice_description(offer: Offer) -> str:
    """What the invoice (and so the wallet's ledger) says was sold."""
    if offer.per_1k_tokens:
        return f"Sovereign: answers from {offer.model}, {offer.price_msat} msat per 1,000 tokens"
    return f"Sovereign: an answer from {offer.model}"


def _bought(offer: Offer, kind: Balance.Kind, short: Presented | None) -> Bought:
    full = bundle_msat(offer, kind)
    description = invoice_description(offer)
    if short is not None and short.balance.kind == kind:
        # An expired balance is not topped up (its remainder could not be spent until the
        # top-up is paid): a fresh token instead. Its expiry as the node has it now.
        short.balance.refresh_from_db(fields=["expires_at"])
        lacking = _invoiced_msat(kind, full - balances.balance_now(short.balance))
        if lacking > 0 and short.balance.expires_at > timezone.now():
            topup = balances.topup_open_or_reuse(short.balance, lacking, f"{description} (top-up)")
            return Bought(short.balance, topup)
    opened = balances.balance_open(
        kind, secrets.token_hex(32), _invoiced_msat(kind, full), description
    )
    return Bought(opened.balance, opened.invoice)


def bundle_msat(offer: Offer, kind: Balance.Kind) -> int:
    """What a fresh balance holds once paid (a top-up fills it back to that): an L402 token,
    SHARING_TOKEN_REQUESTS answers at their most; an MPP charge, what one answer reserves, as
    clients present a charge once and would never spend the rest."""
    if kind == Balance.Kind.MPP:
        return selling.reserve_msat(offer)
    return selling.token_price_msat(offer)


def _invoiced_msat(kind: Balance.Kind, msat: int) -> int:
    """What an invoice asks: an MPP charge states its amount in whole sats (the draft's
    `"currency":"sat"`), so its invoice is rounded up to the sat; the rest stays in the
    balance. An L402 invoice asks the msat exactly."""
    if kind == Balance.Kind.MPP and msat > 0:
        return -(-msat // 1000) * 1000
    return msat


def l402_macaroon(bought: Bought) -> str:
    """The token's macaroon, bound to the invoice it is paid with. Its `valid_until` is the
    latest its balance can last once that invoice is paid (crediting renews a balance to
    SHARING_TOKEN_DAYS after the payment, which can come as late as the invoice expires), so
    the caveat never refuses a balance the payment renewed; the balance's own expiry is what
    spending checks. A balance renewed later by a top-up comes with a new macaroon, bound to
    that top-up's invoice and good as long."""
    renewed = balances.expiry_once_paid(bought.invoice)
    until = int(max(bought.balance.expires_at, renewed).timestamp())
    token_id = bought.balance.token_id
    return macaroons.b64encode(macaroons.mint(bought.invoice.payment_hash, token_id, until))


def mpp_challenge(bought: Bought) -> str:
    """A Lightning `charge` challenge whose paid invoice pays into the bought balance (its id
    travels in `opaque`, which the challenge id covers)."""
    invoice = bought.invoice
    request = {
        # As the draft's example: whole sats as a string (the invoice is made in whole sats).
        "amount": str(invoice.amount_msat // 1000),
        "currency": "sat",
        "methodDetails": {
            "invoice": invoice.bolt11,
            "paymentHash": invoice.payment_hash,
            "network": wallet.node_network(),  # cached: the node just made the invoice
        },
    }
    params = {
        "realm": REALM,
        "method": "lightning",
        "intent": "charge",
        "request": b64url(jcs(request)),
        "expires": rfc3339(invoice.expires_at),
        "description": invoice.description,
        "opaque": b64url(jcs({"token": bought.balance.token_id})),
    }
    params = {"id": mpp_id(params), **params}
    return "Payment " + ", ".join(f'{name}="{value}"' for name, value in params.items())


def payment_receipt(presented: Presented) -> str:
    """MPP's `Payment-Receipt` for a charge taken (draft-httpauth-payment): base64url JCS of
    status, method, timestamp, the payment hash as reference and the challenge id paid."""
    receipt = {
        "status": "success",
        "method": "lightning",
        "timestamp": rfc3339(timezone.now()),
        "reference": presented.payment_hash,
        "challengeId": presented.challenge_id,
    }
    return b64url(jcs(receipt))


def mpp_id(params: dict[str, Any]) -> str:
    joined = "|".join(str(params.get(name, "")) for name in MPP_ID_FIELDS)
    key = macaroons.derived_key(MPP_KEY_PURPOSE)
    return b64url(hmac.new(key, joined.encode(), hashlib.sha256).digest())


# Credentials ---------------------------------------------------------------------------


def scheme_of(authorization: str) -> str:
    """The credential's scheme in lower case ("" for none)."""
    return authorization.strip().partition(" ")[0].lower()


def presented(authorization: str) -> Presented:
    """The balance a credential names, once its form, signature and preimage check out; else
    CredentialRefused saying why."""
    if len(authorization) > CREDENTIAL_BYTES:
        raise CredentialRefused("The credential is longer than any this node issues.")
    scheme = scheme_of(authorization)
    if scheme in ("l402", "lsat"):
        return _l402_presented(authorization.strip())
    if scheme == "payment":
        return _mpp_presented(authorization.strip().partition(" ")[2].strip())
    raise CredentialRefused("Present an L402 (or LSAT) or a Payment credential.")


def _l402_presented(authorization: str) -> Presented:
    found = L402_CREDENTIAL.fullmatch(authorization)
    if found is None:
        raise CredentialRefused(
            "An L402 credential is `L402 <macaroon>:<preimage as 64 lowercase hex digits>`."
        )
    try:
        macaroon = macaroons.verified(found.group(1))
    except macaroons.MacaroonRefused as refused:
        raise CredentialRefused(str(refused)) from None
    _preimage_matches(found.group(2), macaroon.payment_hash)
    return _balance_for(Balance.Kind.L402, macaroon.token_id, macaroon.payment_hash)


def _mpp_presented(encoded: str) -> Presented:
    try:
        credential = json.loads(b64url_decoded(encoded))
        challenge, preimage = credential["challenge"], credential["payload"]["preimage"]
        request = json.loads(b64url_decoded(challenge["request"]))
        payment_hash = request["methodDetails"]["paymentHash"]
        token_id = json.loads(b64url_decoded(challenge["opaque"]))["token"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CredentialRefused("The Payment credential is unreadable.") from None
    if not hmac.compare_digest(str(challenge.get("id", "")), mpp_id(challenge)):
        raise CredentialRefused("The Payment credential's challenge is not one this node issued.")
    # An expired challenge's invoice can no longer be paid (the node refuses it), so a charge
    # paid in time is honoured even when presented after `expires`.
    _preimage_matches(str(preimage), str(payment_hash))
    found = _balance_for(Balance.Kind.MPP, str(token_id), str(payment_hash))
    return replace(found, challenge_id=str(challenge["id"]))


def _preimage_matches(preimage: str, payment_hash: str) -> None:
    if not PREIMAGE.fullmatch(preimage):
        raise CredentialRefused("The preimage must be 64 lowercase hex digits.")
    if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != payment_hash:
        raise CredentialRefused("The preimage is not that of this token's invoice.")


def _balance_for(kind: Balance.Kind, token_id: str, payment_hash: str) -> Presented:
    """The balance and which of its invoices (its first, or a top-up) the credential shows."""
    credit = (
        Credit.objects.select_related("balance", "invoice")
        .filter(
            balance__kind=kind,
            balance__token_id=token_id,
            invoice__payment_hash=payment_hash,
        )
        .first()
    )
    if credit is None:
        raise CredentialRefused("The token is not one this node issued.")
    return Presented(credit.balance, credit, payment_hash)


# Encodings -----------------------------------------------------------------------------


def jcs(value: Any) -> bytes:
    """JSON canonical form for what is sent here (strings and objects): sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
