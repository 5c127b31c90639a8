"""What leaves the node: the egress record (every byte that left for an outside provider, and for
whom), the owner's privacy settings and the household's own words kept out of requests."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Egress(models.Model):
    """One outside request: the exact body sent, where to, for whom, at what cost and proof.
    Written before the first byte leaves, completed when the request ends."""

    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    origin = models.CharField(max_length=10)  # chat, api, agent
    provider = models.CharField(max_length=40)  # the provider's name when it was sent
    url = models.CharField(max_length=400)
    model = models.CharField(max_length=250)  # as the member named it: <provider>/<model id>
    body = models.TextField()  # the exact JSON sent, as redacted
    # What the detectors took out of it: {kind: count}, never a value. Empty when nothing was
    # found; `redacted` is False for a trusted provider (nothing taken out).
    found = models.JSONField(default=dict, blank=True)
    redacted = models.BooleanField(default=True)
    request_id = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=20, blank=True)  # the provider record's outcome
    cost_msat = models.BigIntegerField(default=0)
    payment_hash = models.CharField(max_length=64, blank=True)  # the proof is the wallet's
    sent_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-sent_at", "-id"]

    def __str__(self) -> str:
        return f"egress to {self.provider} ({self.sent_at:%Y-%m-%d %H:%M})"


class PrivacySettings(models.Model):
    """The owner's choices, one row: which detectors are off (so a detector added later is on),
    how long the egress record is kept, and whether a local model reads each outside request
    first for names and places the patterns miss (`model_pass_model` blank: the first local
    model by name)."""

    detectors_off = models.JSONField(default=list, blank=True)
    retention_days = models.PositiveIntegerField(default=90)
    model_pass = models.BooleanField(default=False)
    model_pass_model = models.CharField(max_length=100, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return "privacy settings"


class Term(models.Model):
    """A word of the owner's list (a surname, the street, the town, an employer, a school),
    kept out of every outside request."""

    word = models.CharField(max_length=100, unique=True)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["word"]

    def __str__(self) -> str:
        return "a household term"  # the word itself is private
