"""The egress record: every byte that left the node for an outside provider, and for whom."""

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
    body = models.TextField()  # the exact JSON sent
    request_id = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=20, blank=True)  # the provider record's outcome
    cost_msat = models.BigIntegerField(default=0)
    payment_hash = models.CharField(max_length=64, blank=True)  # the proof is the wallet's
    sent_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-sent_at", "-id"]

    def __str__(self) -> str:
        return f"egress to {self.provider} ({self.sent_at:%Y-%m-%d %H:%M})"
