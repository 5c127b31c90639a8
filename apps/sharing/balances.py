"""Strangers' prepaid balances: opened with an invoice from the household's node, credited only
when the node itself says that invoice was paid, and spent answer by answer.

    balance_open(kind, token_id, amount_msat, description) -> Opened   a balance and its invoice
    topup_open(balance, amount_msat, description) -> Invoice           another invoice into it
    credit_paid(credit) -> Paid        whether the node says this invoice was paid (credit once)
    credit_checked(credit) -> Checked  the same, and whether this very call credited it
    balance_credited(balance) -> Paid  every invoice of the balance asked; its first's state
    renewed(balance)                   the balance refreshed, lasting from its last payment
    reserve(balance, msat) -> bool       the most an answer may cost, taken before it starts
    settle(balance, reserved, cost)      what it did cost kept, the rest given back

An invoice is credited once (`Credit.credited_at`, set by a conditional update), so a preimage
shown again, or shown with another token, never adds to any balance. A node that does not answer
is unknown, not unpaid: the stranger is told to wait, never to pay again.

Every kind of balance (L402, MPP, key) lasts SHARING_TOKEN_DAYS from the last payment credited
to it, its first or a top-up: crediting renews it.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from apps.sharing.models import Balance, Credit
from apps.wallet import services as wallet
from apps.wallet.models import Invoice

CALLER = "sharing"  # the wallet's caller for every invoice a sale issues


class Paid(enum.StrEnum):
    YES = "yes"  # the invoice asked about was paid, and is credited
    NO = "no"  # the invoice asked about is unpaid (or expired): nothing to spend
    UNKNOWN = "unknown"  # the node did not answer: ask again later, never pay twice


@dataclass(frozen=True)
class Opened:
    balance: Balance
    invoice: Invoice


def balance_open(kind: Balance.Kind, token_id: str, amount_msat: int, description: str) -> Opened:
    """A new balance, empty until its invoice (made now by the node) is paid."""
    expires = timezone.now() + timedelta(days=settings.SHARING_TOKEN_DAYS)
    invoice = wallet.invoice_create(
        amount_msat, description, purpose=f"sale:{kind}:{token_id}", caller=CALLER
    )
    with transaction.atomic():
        balance = Balance.objects.create(kind=kind, token_id=token_id, expires_at=expires)
        Credit.objects.create(balance=balance, invoice=invoice)
    return Opened(balance, invoice)


def topup_open(balance: Balance, amount_msat: int, description: str) -> Invoice:
    """Another invoice paying into `balance`, credited like its first."""
    purpose = f"sale:topup:{balance.pk}:{secrets.token_hex(8)}"
    invoice = wallet.invoice_create(amount_msat, description, purpose=purpose, caller=CALLER)
    Credit.objects.create(balance=balance, invoice=invoice)
    return invoice


@dataclass(frozen=True)
class Checked:
    paid: Paid
    credited_now: bool  # this call's conditional update credited it (so audit it once, here)


def balance_credited(balance: Balance) -> Paid:
    """Credit every invoice of the balance that the node says was paid, once each; whether its
    first invoice was paid at all (a key's balance exists only once it was)."""
    first: Paid | None = None
    for credit in balance.credits.select_related("invoice").order_by("pk"):
        state = credit_paid(credit)
        if first is None:
            first = state
    return first or Paid.NO


def credit_paid(credit: Credit) -> Paid:
    """Whether the node says this invoice of a balance was paid, crediting it once if so: the
    state of the payment a credential shows, not of any other invoice of its balance."""
    return credit_checked(credit).paid


def credit_checked(credit: Credit) -> Checked:
    if credit.credited_at is not None:
        return Checked(Paid.YES, credited_now=False)
    state = wallet.invoice_state_now(credit.invoice)
    if state is None:
        return Checked(Paid.UNKNOWN, credited_now=False)
    if state != Invoice.State.PAID:
        return Checked(Paid.NO, credited_now=False)
    received = credit.invoice.amount_received_msat or credit.invoice.amount_msat
    with transaction.atomic():
        # Conditional: two requests showing the same payment at once credit it once.
        now = timezone.now()
        changed = Credit.objects.filter(pk=credit.pk, credited_at=None).update(credited_at=now)
        if changed:
            Balance.objects.filter(pk=credit.balance_id).update(
                balance_msat=F("balance_msat") + received
            )
            _renew(credit.balance_id)
    credit.refresh_from_db(fields=["credited_at"])
    return Checked(Paid.YES, credited_now=bool(changed))


def renewed(balance: Balance) -> None:
    """`balance` refreshed, with the expiry its last credited payment gives it."""
    _renew(balance.pk)
    balance.refresh_from_db()


def _renew(balance_id: int) -> None:
    """A balance lasts SHARING_TOKEN_DAYS from the last payment credited to it; never shortened."""
    last = Credit.objects.filter(balance_id=balance_id).aggregate(last=Max("credited_at"))["last"]
    if last is not None:
        renewed = last + timedelta(days=settings.SHARING_TOKEN_DAYS)
        Balance.objects.filter(pk=balance_id, expires_at__lt=renewed).update(expires_at=renewed)


def expiry_once_paid(invoice: Invoice) -> datetime:
    """The latest a balance can last thanks to this invoice: paid at the last moment it can
    be, SHARING_TOKEN_DAYS from then (what a macaroon bound to it may be good until)."""
    return invoice.expires_at + timedelta(days=settings.SHARING_TOKEN_DAYS)


def reserve(balance: Balance, msat: int) -> bool:
    """Take `msat` from the balance if it holds that much and has not expired."""
    taken = Balance.objects.filter(
        pk=balance.pk, balance_msat__gte=msat, expires_at__gt=timezone.now()
    ).update(balance_msat=F("balance_msat") - msat, last_used_at=timezone.now())
    return bool(taken)


def settle(balance: Balance, reserved_msat: int, cost_msat: int) -> None:
    """An answer ended: it cost `cost_msat` (at most what it reserved); the rest goes back."""
    back = reserved_msat - min(cost_msat, reserved_msat)
    if back:
        Balance.objects.filter(pk=balance.pk).update(balance_msat=F("balance_msat") + back)


def balance_now(balance: Balance) -> int:
    return int(Balance.objects.filter(pk=balance.pk).values_list("balance_msat", flat=True)[0])


def topup_open_or_reuse(balance: Balance, amount_msat: int, description: str) -> Invoice:
    """The balance's open top-up of this amount if it has one (unpaid, not credited, still
    payable for TOPUP_REUSE_MARGIN), else a new one: asking again, paid or not, does not make
    the node issue invoice after invoice."""
    credits = balance.credits.order_by("pk")
    first = credits.first()
    open_topups = credits.filter(
        credited_at=None,
        invoice__state=Invoice.State.UNPAID,
        invoice__amount_msat=amount_msat,
        invoice__expires_at__gt=timezone.now() + TOPUP_REUSE_MARGIN,
    ).select_related("invoice")
    reused = open_topups.exclude(pk=first.pk).last() if first is not None else None
    if reused is not None:
        return reused.invoice
    return topup_open(balance, amount_msat, description)


TOPUP_REUSE_MARGIN = timedelta(minutes=10)  # left to pay a reused top-up in
