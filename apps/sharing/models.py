"""Sharing the household's models: with friends (by their Nostr keys, within quotas) and, when
the owner turns it on, selling answers to strangers who pay over Lightning (L402, MPP, or a
Routstr-style `sk-` key bought with an invoice), announced on Nostr.

Money, as in the wallet: a stranger's balance grows only from an invoice the node issued and
the node itself says was paid (`listinvoices`), credited once per invoice (`Credit`); an answer
reserves its most before it starts and is charged what it used when it ends."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from apps.identity.models import Member
from apps.wallet.models import Invoice


class Offer(models.Model):
    """A local model sold to strangers: per request, or per 1,000 tokens with a per-request
    most. No row: not for sale."""

    model = models.CharField(max_length=100, unique=True)  # a LocalModel's name
    price_msat = models.BigIntegerField()  # per request, or per 1,000 tokens
    per_1k_tokens = models.BooleanField(default=False)
    # Priced per 1,000 tokens: the most one request may cost (what it reserves, and the invoice
    # of a fresh token). Per request: unused.
    max_request_msat = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["model"]

    def __str__(self) -> str:
        return f"offer {self.model}"


class Share(models.Model):
    """What the owner shares with one friend, and how much of it a day."""

    member = models.OneToOneField(Member, on_delete=models.CASCADE, related_name="share")
    # Local models by name; an outside one (`<provider>/<model id>`) only if the owner pays for
    # it, within the friend's own allowance (the wallet's member budget).
    model_names = models.JSONField(default=list)
    daily_requests = models.PositiveIntegerField(default=100)
    daily_tokens = models.PositiveIntegerField(null=True, blank=True)  # None: no token limit
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"share with member {self.member_id}"


class Usage(models.Model):
    """A friend's requests and tokens on one day (UTC), counted against their quota."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="sharing_usage")
    day = models.DateField()
    requests = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["member", "day"], name="sharing_usage_one_a_day")
        ]

    def __str__(self) -> str:
        return f"usage of member {self.member_id} on {self.day}"


class Balance(models.Model):
    """What a stranger paid for and has not spent: an L402 or MPP token, or an `sk-` key."""

    class Kind(models.TextChoices):
        L402 = "l402"
        MPP = "mpp"
        KEY = "key"  # Routstr's flow: an invoice buys an `sk-` key

    kind = models.CharField(max_length=4, choices=Kind.choices)
    # The token's id (hex, from the macaroon's identifier or the MPP challenge), or for a key
    # the sha256 of the key: never the key itself.
    token_id = models.CharField(max_length=64, unique=True)
    balance_msat = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.CheckConstraint(
                condition=models.Q(balance_msat__gte=0), name="sharing_balance_never_below_0"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} balance {self.pk}"


class Credit(models.Model):
    """An invoice that pays into a balance: its first, or a top-up. Credited once, when the
    node says it was paid."""

    balance = models.ForeignKey(Balance, on_delete=models.PROTECT, related_name="credits")
    invoice = models.OneToOneField(Invoice, on_delete=models.PROTECT, related_name="credit")
    credited_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"credit {self.invoice_id} to balance {self.balance_id}"


class Sale(models.Model):
    """One answer sold to a stranger: what it cost and what it used."""

    balance = models.ForeignKey(Balance, on_delete=models.PROTECT, related_name="sales")
    model = models.CharField(max_length=100)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_msat = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"sale {self.pk} of {self.model}"


class Listing(models.Model):
    """The offer as announced on Nostr (one row): where strangers reach the node, and the events
    published, so turning selling off can withdraw them."""

    urls = models.JSONField(default=list)  # the `u` tags: an onion address, a public URL
    announced_ids = models.JSONField(default=list)  # event ids now on the relays
    announced_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return "listing"
