"""The payment journal, the invoices the node issued, and the budgets spending must stay within.

Amounts are integers in millisatoshis, as Core Lightning gives them. Budgets and balances are
never stored: they are sums over the journal (see budgets.py).
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models


def preimage_matches(preimage: str, payment_hash: str) -> bool:
    """The proof anyone can check: the preimage hashes to the invoice's payment hash."""
    try:
        return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash
    except ValueError:
        return False


class AuditAction(models.TextChoices):
    """What the wallet writes to the audit trail (apps.audit), with the labels people read."""

    PAYMENT_RESERVED = "payment_reserved", "Payment reserved"
    PAYMENT_SENT = "payment_sent", "Payment sent"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    INVOICE_ISSUED = "invoice_issued", "Invoice issued"
    INVOICE_PAID = "invoice_paid", "Invoice paid"


class Payment(models.Model):
    """One outgoing payment, written as pending before the node is asked to pay."""

    class State(models.TextChoices):
        PENDING = "pending"  # asked, or about to be: the outcome is not known yet
        COMPLETE = "complete"
        FAILED = "failed"  # final: nothing was paid

    purpose = models.CharField(max_length=200, unique=True)  # the same purpose pays once
    label = models.CharField(max_length=220, unique=True)  # what the node's records carry
    caller = models.CharField(max_length=100)  # "member:3", "agent:42", "provider:…"
    # Who the caller pays for, when someone else: an agent task ("agent:42") paying a provider
    # (caller "provider:…"). A caller's cap counts the rows it is the caller or the payer of.
    payer = models.CharField(max_length=100, blank=True, default="")
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    bolt11 = models.TextField()
    payment_hash = models.CharField(max_length=64, db_index=True)
    destination = models.CharField(max_length=66)
    description = models.TextField(blank=True)
    amount_msat = models.BigIntegerField()
    max_fee_msat = models.BigIntegerField()
    fee_msat = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    preimage = models.CharField(max_length=64, blank=True)  # the proof, once complete
    token_may_be_live = models.BooleanField(default=False)  # then the preimage is a credential
    node_answered = models.BooleanField(default=False)  # xpay gave its verdict: it stopped trying
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"payment {self.label} ({self.state})"

    @property
    def proof_holds(self) -> bool:
        return preimage_matches(self.preimage, self.payment_hash)

    @property
    def audit_note(self) -> str:
        """What the audit trail says of it: never the preimage (it may be a live credential)
        nor the invoice, only the amount and enough of the hash to find it in the ledger."""
        return f"{self.amount_msat} msat, payment hash {self.payment_hash[:16]}…"


class Invoice(models.Model):
    """An invoice the node issued, to be paid to this node."""

    class State(models.TextChoices):
        UNPAID = "unpaid"
        PAID = "paid"
        EXPIRED = "expired"

    purpose = models.CharField(max_length=200, unique=True)
    label = models.CharField(max_length=220, unique=True)
    caller = models.CharField(max_length=100)
    bolt11 = models.TextField()
    payment_hash = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    amount_msat = models.BigIntegerField()
    amount_received_msat = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.UNPAID)
    preimage = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"invoice {self.label} ({self.state})"


class Budget(models.Model):
    """A limit on spending: the household's per period, a member's allowance, a caller's cap,
    or the most any single payment may cost (amount plus fee)."""

    class Scope(models.TextChoices):
        HOUSEHOLD = "household", "Household"
        MEMBER = "member", "Member's allowance"
        CALLER = "caller", "Caller's cap"
        REQUEST = "request", "Price limit per payment"

    class Period(models.TextChoices):
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        TOTAL = "total", "in all"  # never starts again: an agent task's cap
        EACH = "each", "each payment"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    caller = models.CharField(max_length=100, blank=True)
    period = models.CharField(max_length=10, choices=Period.choices)
    limit_msat = models.BigIntegerField()  # one row per (scope, member, caller): budgets.py

    def __str__(self) -> str:
        return f"{self.scope} budget {self.limit_msat} msat {self.period_shown}"

    @property
    def period_shown(self) -> str:
        return "in all" if self.period == self.Period.TOTAL else f"per {self.period}"


class SpendingLock(models.Model):
    """One row that every spender locks first, so budget checks and reservations serialise
    (SELECT … FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transactions already do)."""

    def __str__(self) -> str:
        return "spending lock"
