"""Routstr's Lightning flow (lightning.md §3.1): an invoice from the household's node buys an
`sk-` key whose balance pays for answers, so Routstr's own clients use this node unchanged.

    key_invoice_create(sats) -> Made              an invoice that buys a new key
    key_topup_create(key, sats) -> Made           an invoice that adds to a key's balance
    invoice_status(invoice_id) -> Status          pending | paid (with the key, for the
                                                  invoice that bought it) | expired
    invoice_recover(bolt11) -> Status             the same, found by the invoice itself
    key_balance(key) -> Balance                   the key's balance, credited from the node
    node_info() -> dict                           Routstr's /v1/info

The key is never stored: it is `sk-` + HMAC(root key, the first invoice's payment hash), the
root key kept owner-only in the data directory, so a status asked again gives it again; the
balance is found by sha256(key). Knowing the payment hash (which every hop of the payment
sees) gives nothing without the root key. An invoice id is the payment hash with a MAC of it,
so ids cannot be guessed and nothing more is stored to find them.

A node that does not answer (`Paid.UNKNOWN`) is never "unpaid": the invoice stays pending and
the buyer is told to ask again, never to pay again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.audit.services import audit_record
from apps.identity import services as identity
from apps.sharing import balances
from apps.sharing.balances import Paid
from apps.sharing.models import Balance, Credit, Listing, Offer
from apps.wallet.models import Invoice
from sovereign.environment import secret_file

KEY_PREFIX = "sk-"
KEY_SHAPE = re.compile(r"sk-[0-9a-f]{64}")
MAX_INVOICE_SATS = 1_000_000  # Routstr's own bound
INVOICE_ID_MAC_BYTES = 16
ACTOR = "stranger"

AUDIT_LABELS = {
    "sharing_key_invoice": "Invoice for a new API key (Routstr)",
    "sharing_key_topup": "Top-up invoice for an API key (Routstr)",
    "sharing_key_paid": "API key paid for (Routstr)",
    "sharing_key_answer": "Answer sold to an API key (Routstr)",
    "sharing_key_refused": "Unknown API key refused (Routstr)",
}
AUDIT_FOLDED = ("sharing_key_refused",)


class KeyRefused(Exception):
    """What the buyer is told, with the HTTP status Routstr answers it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Made:
    """Routstr's answer to `POST /lightning/invoice`."""

    invoice_id: str
    bolt11: str
    amount_sats: int
    expires_at: int
    payment_hash: str  # the invoice's own hash (routstr-core puts a Cashu quote id here)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Status:
    """Routstr's invoice status; the key only once its invoice is paid."""

    status: str  # pending | paid | expired
    api_key: str | None
    amount_sats: int
    paid_at: int | None
    created_at: int
    expires_at: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# Keys and ids ----------------------------------------------------------------------------


def _mac(purpose: str, value: str) -> bytes:
    root = secret_file(settings.DATA_DIR / "sharing_key_root", lambda: secrets.token_hex(32))
    return hmac.new(root.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).digest()


def key_for(payment_hash: str) -> str:
    """The key a balance's first invoice buys (made again, never kept)."""
    return KEY_PREFIX + _mac("key", payment_hash).hex()


def token_id_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def invoice_id_for(invoice: Invoice) -> str:
    mac = _mac("invoice-id", invoice.payment_hash)[:INVOICE_ID_MAC_BYTES]
    raw = bytes.fromhex(invoice.payment_hash) + mac
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invoice_of_id(invoice_id: str) -> Invoice | None:
    try:
        raw = base64.urlsafe_b64decode(invoice_id + "=" * (-len(invoice_id) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32 + INVOICE_ID_MAC_BYTES:
        return None
    payment_hash = raw[:32].hex()
    expected = _mac("invoice-id", payment_hash)[:INVOICE_ID_MAC_BYTES]
    if not hmac.compare_digest(raw[32:], expected):
        return None
    return _key_invoices().filter(payment_hash=payment_hash).first()


def _key_invoices() -> QuerySet[Invoice]:
    """Invoices that pay into a key's balance: no other invoice of the node is ever shown."""
    return Invoice.objects.filter(
        caller=balances.CALLER, credit__balance__kind=Balance.Kind.KEY
    ).select_related("credit__balance")


def _key_of(balance: Balance) -> str | None:
    """The balance's key, from its first invoice; None for a balance no key leads to (one
    left half-made by a crash)."""
    first = balance.credits.select_related("invoice").order_by("pk").first()
    if first is None:
        return None
    key = key_for(first.invoice.payment_hash)
    return key if hmac.compare_digest(token_id_of(key), balance.token_id) else None


# Invoices --------------------------------------------------------------------------------


def _amount_checked(sats: Any) -> int:
    if isinstance(sats, bool) or not isinstance(sats, int) or not 0 < sats <= MAX_INVOICE_SATS:
        raise KeyRefused(422, f"amount_sats must be a whole number from 1 to {MAX_INVOICE_SATS}.")
    return sats


def _selling() -> None:
    if not Offer.objects.exists():
        raise KeyRefused(404, "This node sells nothing now.")


def key_invoice_create(sats: Any) -> Made:
    amount = _amount_checked(sats)
    _selling()
    # The key hangs on the invoice's hash, known only once the node made it: the balance is
    # opened under a random placeholder, then given the key's hash. A crash between leaves an
    # empty balance that no key leads to, and its invoice was never shown to anyone.
    opened = balances.balance_open(
        Balance.Kind.KEY, secrets.token_hex(32), amount * 1000, f"Sovereign API key, {amount} sats"
    )
    key = key_for(opened.invoice.payment_hash)
    with transaction.atomic():
        Balance.objects.filter(pk=opened.balance.pk).update(token_id=token_id_of(key))
        audit_record(
            "sharing_key_invoice",
            actor=ACTOR,
            subject=f"balance {opened.balance.pk}",
            detail=f"{amount} sats",
        )
    return _made(opened.invoice)


def key_topup_create(key: str, sats: Any) -> Made:
    amount = _amount_checked(sats)
    _selling()
    balance = _issued_balance(key, not_found=404, expired_too=True)  # a top-up renews it
    invoice = balances.topup_open_or_reuse(
        balance, amount * 1000, f"Sovereign API key top-up, {amount} sats"
    )
    audit_record(
        "sharing_key_topup", actor=ACTOR, subject=f"balance {balance.pk}", detail=f"{amount} sats"
    )
    return _made(invoice)


def _made(invoice: Invoice) -> Made:
    return Made(
        invoice_id=invoice_id_for(invoice),
        bolt11=invoice.bolt11,
        amount_sats=invoice.amount_msat // 1000,
        expires_at=_unix(invoice.expires_at) or 0,
        payment_hash=invoice.payment_hash,
    )


def invoice_status(invoice_id: str) -> Status:
    invoice = _invoice_of_id(invoice_id) if len(invoice_id) <= 200 else None
    if invoice is None:
        raise KeyRefused(404, "Invoice not found")
    return _status_shown(invoice)


def invoice_recover(bolt11: Any) -> Status:
    if not isinstance(bolt11, str) or not 0 < len(bolt11) <= 4000:
        raise KeyRefused(422, "bolt11 must be the invoice this node gave.")
    invoice = _key_invoices().filter(bolt11=bolt11.strip().lower()).first()
    if invoice is None:
        raise KeyRefused(404, "Invoice not found")
    return _status_shown(invoice)


def _status_shown(invoice: Invoice) -> Status:
    """The invoice's status; the key only for the invoice that bought it. A top-up's id or
    bolt11 is known to whoever was shown or paid that invoice (a friend paying it, a wallet's
    history), which must not make them the key's holder: its status comes without the key."""
    status = _status(invoice)
    if status.api_key is not None and not _buys_the_key(invoice):
        return replace(status, api_key=None)
    return status


def _buys_the_key(invoice: Invoice) -> bool:
    first = Credit.objects.filter(balance_id=invoice.credit.balance_id).order_by("pk").first()
    return first is not None and first.invoice_id == invoice.pk


def _status(invoice: Invoice) -> Status:
    credit: Credit = invoice.credit
    balance = credit.balance
    # Audited only by the call whose conditional update credited it: polls at once audit once.
    checked = balances.credit_checked(credit)
    balances.renewed(balance)
    credit.refresh_from_db()
    invoice.refresh_from_db()
    if credit.credited_at is not None:
        state, key = "paid", _key_of(balance)
        if checked.credited_now:
            sats = invoice.amount_msat // 1000
            audit_record(
                "sharing_key_paid",
                actor=ACTOR,
                subject=f"balance {balance.pk}",
                detail=f"{sats} sats",
            )
    elif invoice.state == Invoice.State.EXPIRED:
        state, key = "expired", None
    else:  # unpaid, or the node did not answer: pending either way, never "pay again"
        state, key = "pending", None
    return Status(
        status=state,
        api_key=key,
        amount_sats=invoice.amount_msat // 1000,
        paid_at=_unix(invoice.paid_at) if key else None,
        created_at=_unix(invoice.created_at) or 0,
        expires_at=_unix(invoice.expires_at) or 0,
    )


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


# Spending --------------------------------------------------------------------------------


def key_balance(key: str) -> Balance:
    """The balance a key holds, every paid invoice credited: KeyRefused for a key this node
    never gave, an expired one, or (503) while the node cannot say whether it was paid."""
    return _issued_balance(key, not_found=401)


def _issued_balance(key: str, *, not_found: int, expired_too: bool = False) -> Balance:
    balance = None
    if KEY_SHAPE.fullmatch(key):
        balance = Balance.objects.filter(kind=Balance.Kind.KEY, token_id=token_id_of(key)).first()
    if balance is None:
        audit_record("sharing_key_refused", detail="no balance has this key")
        raise KeyRefused(not_found, "Invalid API key" if not_found == 401 else "API key not found")
    paid = balances.balance_credited(balance)
    if paid == Paid.NO:  # its invoice was never paid, so the key was never given
        raise KeyRefused(not_found, "Invalid API key" if not_found == 401 else "API key not found")
    if paid == Paid.UNKNOWN:
        raise KeyRefused(503, "The node cannot tell now whether this key was paid; ask again.")
    balances.renewed(balance)
    if balance.expires_at <= timezone.now() and not expired_too:
        raise KeyRefused(401, "This API key has expired; a top-up renews it.")
    return balance


def balance_info(key: str) -> dict[str, Any]:
    """Routstr's `GET /v1/balance/info`: the balance in msat (what answers in progress have
    reserved is already taken from it)."""
    balance = key_balance(key)
    return {"api_key": key, "balance": balance.balance_msat, "reserved": 0}


def answer_audited(balance: Balance, model: str) -> None:
    audit_record("sharing_key_answer", actor=ACTOR, subject=f"balance {balance.pk}", detail=model)


# The node --------------------------------------------------------------------------------


def node_info() -> dict[str, Any]:
    """Routstr's `GET /v1/info`: no Cashu mints, the addresses the owner announces."""
    listing = Listing.objects.first()
    urls = [str(url) for url in (listing.urls if listing else [])]
    onion = next((url for url in urls if ".onion" in url), "")
    public = next((url for url in urls if ".onion" not in url), "")
    return {
        "name": "Sovereign",
        "description": "A household AI node selling answers of its local models over Lightning",
        "version": _version(),
        "npub": identity.node_npub(),
        "mints": [],
        "http_url": public,
        "onion_url": onion,
    }


def _version() -> str:
    try:
        return version("sovereign")
    except PackageNotFoundError:
        return "unknown"
