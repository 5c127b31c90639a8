"""Credentials bought from providers, as the paying kinds keep them (L402 tokens, MPP charges).

A credential is written `pending` before the payment that buys it is sent; the settled payment
makes it `live`; a provider asking to be paid again on it (or its payment failing) makes it
`spent`. States move only by conditional updates: zero rows changed means another request got
there first, and its word stands. Secrets are sealed at rest (secrets.py); the preimage of a
kept token is never copied here: it stays in the wallet's payment, found by its purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from apps.providers import secrets
from apps.providers.models import Credential

State = Credential.State


@dataclass(frozen=True)
class Kept:
    """A credential as a kind reads it: no database object crosses into the HTTP code."""

    id: int
    scheme: str
    secret: str
    payment_purpose: str
    state: str
    created_at: datetime


def credential_open(
    provider_id: int, scheme: str, secret: str, purpose: str, note: dict[str, Any] | None = None
) -> int:
    """Write the credential as pending, before its payment is sent."""
    return Credential.objects.create(
        provider_id=provider_id,
        scheme=scheme,
        secret_sealed=secrets.seal(secret),
        payment_purpose=purpose,
        state=State.PENDING,
        note=note or {},
    ).pk


def credentials_unspent(provider_id: int, schemes: tuple[str, ...]) -> list[Kept]:
    """This provider's pending and live credentials of these schemes, newest first."""
    rows = Credential.objects.filter(
        provider_id=provider_id, scheme__in=schemes, state__in=[State.PENDING, State.LIVE]
    ).order_by("-created_at", "-id")
    return [
        Kept(
            row.pk,
            row.scheme,
            secrets.unseal(row.secret_sealed),
            row.payment_purpose,
            row.state,
            row.created_at,
        )
        for row in rows
    ]


def credential_live(credential_id: int) -> bool:
    """Its payment is complete: pending becomes live (a spent one stays spent)."""
    changed = Credential.objects.filter(pk=credential_id, state=State.PENDING).update(
        state=State.LIVE
    )
    return changed == 1


def credential_spent(credential_id: int) -> None:
    """The provider will not take it again, or its payment failed: never used again."""
    Credential.objects.filter(pk=credential_id).exclude(state=State.SPENT).update(state=State.SPENT)


def credential_used(credential_id: int) -> None:
    Credential.objects.filter(pk=credential_id).update(used_at=timezone.now())


def credential_noted(credential_id: int, note: dict[str, Any]) -> None:
    """Add to what a kind keeps about a credential (an MPP receipt)."""
    row = Credential.objects.filter(pk=credential_id).first()
    if row is not None:
        row.note = {**(row.note or {}), **note}
        row.save(update_fields=["note"])
