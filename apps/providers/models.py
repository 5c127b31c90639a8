"""Outside providers: who they are, what they offer at what price, the credentials bought from
them, and how each request to them went (the provider's local reputation).

Amounts are integers in millisatoshis. Secrets (API keys, kept tokens) are sealed at rest
(sealing.py): a copy of the database alone does not spend a household's balances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$"


class Provider(models.Model):
    class Kind(models.TextChoices):
        L402 = "l402", "L402 (pay per request)"
        MPP = "mpp", "MPP Payment (pay per request)"
        PREPAID = "prepaid", "Prepaid key, topped up over Lightning"
        OPENAI = "openai", "OpenAI-compatible server on the home network"

    # The first part of its models' names, `<name>/<model id>`: short, lower case, no slash.
    name = models.CharField(max_length=40, unique=True, validators=[RegexValidator(NAME_PATTERN)])
    kind = models.CharField(max_length=10, choices=Kind.choices)
    base_url = models.CharField(max_length=300)  # the root: chat is at {base_url}/v1/…
    secret_sealed = models.TextField(blank=True)  # an API key the owner gave (openai kind)
    trusted = models.BooleanField(default=False)  # nothing redacted for it (the privacy issue)
    timeout_seconds = models.FloatField(default=60.0)
    max_price_msat = models.BigIntegerField()  # per request, when the provider publishes none
    topup_msat = models.BigIntegerField()  # prepaid: what one top-up buys
    added_at = models.DateTimeField(auto_now_add=True)
    catalog_fetched_at = models.DateTimeField(null=True, blank=True)
    catalog_error = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"provider {self.name} ({self.kind})"

    @property
    def pays(self) -> bool:
        return self.kind != self.Kind.OPENAI


class ProviderModel(models.Model):
    """A model a provider offers, with the price it publishes (if any)."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    model_id = models.CharField(max_length=200)
    request_msat = models.BigIntegerField(null=True, blank=True)  # a fixed price per request
    prompt_msat_per_1k = models.BigIntegerField(null=True, blank=True)
    completion_msat_per_1k = models.BigIntegerField(null=True, blank=True)
    context_length = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["provider__name", "model_id"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "model_id"], name="one_model_per_id")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"{self.provider.name}/{self.model_id}"

    def price(self) -> Price:
        return Price(
            self.provider.pays,
            self.provider.max_price_msat,
            self.request_msat,
            self.prompt_msat_per_1k,
            self.completion_msat_per_1k,
        )

    def price_msat(self, max_tokens: int, prompt_tokens: int = 0) -> int:
        return self.price().most(max_tokens, prompt_tokens)


@dataclass(frozen=True)
class Price:
    """What a provider publishes for one of its models."""

    paid: bool  # False on the home network
    provider_max_msat: int
    request_msat: int | None
    prompt_msat_per_1k: int | None
    completion_msat_per_1k: int | None

    def most(self, max_tokens: int, prompt_tokens: int = 0) -> int:
        """The most one request may cost, as shown before asking: the fixed price, or the
        per-token prices for the prompt and the longest answer, rounded up; the provider's
        own limit when nothing is published. Free on the home network."""
        if not self.paid:
            return 0
        if self.request_msat is not None:
            return self.request_msat
        if self.prompt_msat_per_1k is None and self.completion_msat_per_1k is None:
            return self.provider_max_msat
        prompt = (self.prompt_msat_per_1k or 0) * prompt_tokens
        completion = (self.completion_msat_per_1k or 0) * max_tokens
        return math.ceil((prompt + completion) / 1000)


class Credential(models.Model):
    """What a provider takes instead of an account: a kept L402 token (a prepaid balance, as
    Aperture meters AI endpoints) or a prepaid key. Written `pending` before the payment that
    buys it is sent, so a crash after paying leaves a row the settled payment makes usable."""

    class State(models.TextChoices):
        PENDING = "pending"  # its payment's outcome is not known yet
        LIVE = "live"
        SPENT = "spent"  # the provider asked to be paid again on it, or its payment failed

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="credentials")
    scheme = models.CharField(max_length=10)  # L402, LSAT, Bearer
    secret_sealed = models.TextField(blank=True)  # the token or key, sealed
    payment_purpose = models.CharField(max_length=200, blank=True)  # the payment that bought it
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    balance_msat = models.BigIntegerField(null=True, blank=True)  # prepaid: provider's last word
    note = models.JSONField(default=dict, blank=True)  # a kind's extras (invoice id, receipt)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.scheme} credential for {self.provider.name} ({self.state})"


class OutsideRequest(models.Model):
    """How one request to a provider went: the provider's local reputation is a sum of these."""

    class Outcome(models.TextChoices):
        ANSWERED = "answered"
        FAILED = "failed"
        TIMEOUT = "timeout"
        INVOICE_REFUSED = "invoice_refused"
        OVER_BUDGET = "over_budget"
        PAYMENT_PENDING = "payment_pending"
        STOPPED = "stopped"  # the member stopped the answer, or left: not the provider's doing
        WALLET_UNAVAILABLE = "wallet_unavailable"  # the household's node could not be asked

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="requests")
    model_id = models.CharField(max_length=200)
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    request_id = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    first_token_ms = models.IntegerField(null=True, blank=True)
    total_ms = models.IntegerField(null=True, blank=True)
    prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField(default=0)
    cost_msat = models.BigIntegerField(default=0)  # paid for this request (fees included)
    payment_purpose = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"request to {self.provider.name}/{self.model_id} ({self.outcome})"


class Route(models.Model):
    """An owner's named route across models, asked for as the model `route/<name>`: `fallback`
    tries its models in order until one answers; `spread` gives each new conversation to the
    model a member has used least, so no one provider sees all of their conversations.

    Its models are kept by name (`<provider>/<model id>` or a local model's name): a provider's
    catalog is read again now and then, and a model it no longer lists is skipped, not lost."""

    class Policy(models.TextChoices):
        FALLBACK = "fallback", "Fallback (in order)"
        SPREAD = "spread", "Spread (each new conversation elsewhere)"

    name = models.CharField(max_length=40, unique=True, validators=[RegexValidator(NAME_PATTERN)])
    policy = models.CharField(max_length=10, choices=Policy.choices)
    model_names = models.JSONField(default=list)  # in the owner's order
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"route {self.name} ({self.policy})"


class RouteChoice(models.Model):
    """Which model of a route answered a member's conversation: the conversation stays with
    it, and spread counts these to give a new conversation to the model used least. An API
    request has no conversation (`conversation_key` empty): each counts as a new one."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="choices")
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    conversation_key = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=250)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["route", "member", "conversation_key"],
                condition=~models.Q(conversation_key=""),
                name="one_choice_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.route.name}: {self.model}"
