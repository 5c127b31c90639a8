"""The audit trail: who did what, written by every part in the transaction of the change."""

from __future__ import annotations

from typing import ClassVar

from django.core.validators import RegexValidator
from django.db import models

# An action is named by the part that writes it ("payment_sent", "provider_added"); the set is
# open, so a new action needs no migration here, only a label from its part (services.py).
ACTION_PATTERN = r"^[a-z][a-z0-9_.]{0,39}$"


class AuditEvent(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=40, validators=[RegexValidator(ACTION_PATTERN)])
    # a pubkey in hex, a caller such as "member:3" or "provider:routstr", "shell", or "" for
    # the node itself or someone not logged in
    actor = models.CharField(max_length=100, blank=True)
    subject = models.CharField(max_length=200, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.subject}"
