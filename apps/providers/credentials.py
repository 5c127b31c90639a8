"""Credentials bought from providers, as the paying kinds keep them (L402 tokens, MPP charges).

A credential is written `pending` before the payment that buys it is sent; the settled payment
makes it `live`; a provider asking to be paid again on it (or its payment failing) makes it
`spent`. States move only by conditional updates: zero rows changed means another request got
there first, and its word stands. Secrets are sealed at rest (sealing.py); the preimage of a
kept token is never copied here: it stays in the wallet's payment, found by its purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from apps.providers import sealing
from apps.providers.models import Credential
from apps.wallet.models import Payment

State = Credential.State
USED_AT_STEP = timedelta(minutes=1)


@dataclass(frozen=True)
class Kept:
    """A credential as a kind reads it: no database object crosses into the HTTP code."""

    id: int
    scheme: str
    secret: str
    payment_purpose: str
    state: str
    created_at: datetime
    used_at: datetime | None = None


def credential_open(
    provider_id: int, scheme: str, secret: str, purpose: str, note: dict[str, Any] | None = None
) -> int:
    """Write the credential as pending, before its payment is sent."""
    return Credential.objects.create(
        provider_id=provider_id,
        scheme=scheme,
        secret_sealed=sealing.seal(secret),
        payment_purpose=purpose,
        state=State.PENDING,
        note=note or {},
    ).pk


# Every request to a paying provider reads its kept credentials: fixed queries, not ones the
# ORM compiles each time (most of what a kept token would otherwise add to a request).
_UNSPENT_SQL = (
    "SELECT id, scheme, secret_sealed, payment_purpose, state, created_at, used_at "
    "FROM providers_credential WHERE provider_id = %s AND state IN ('pending', 'live') "
    "ORDER BY created_at DESC, id DESC"
)
_USED_SQL = (
    "UPDATE providers_credential SET used_at = %s "
    "WHERE id = %s AND (used_at IS NULL OR used_at < %s)"
)


def credentials_unspent(provider_id: int, schemes: tuple[str, ...]) -> list[Kept]:
    """This provider's pending and live credentials of these schemes, newest first."""
    with connection.cursor() as cursor:
        cursor.execute(_UNSPENT_SQL, [provider_id])
        rows = cursor.fetchall()
    stamp = Credential._meta.get_field("created_at")
    return [
        Kept(
            pk,
            scheme,
            sealing.unseal(sealed),
            purpose,
            state,
            _datetime(stamp, created),
            None if used is None else _datetime(stamp, used),
        )
        for pk, scheme, sealed, purpose, state, created, used in rows
        if scheme in schemes
    ]


def _datetime(field: Any, value: Any) -> datetime:
    """A datetime as the database gave it (SQLite: text), as the ORM would read it."""
    converters = field.get_db_converters(connection)
    for converter in converters:
        value = converter(value, field, connection)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value  # type: ignore[no-any-return]


def credential_live(credential_id: int) -> bool:
    """Its payment is complete: pending becomes live (a spent one stays spent)."""
    changed = Credential.objects.filter(pk=credential_id, state=State.PENDING).update(
        state=State.LIVE
    )
    return changed == 1


def credential_spent(credential_id: int) -> None:
    """The provider will not take it again, or its payment failed: never used again."""
    Credential.objects.filter(pk=credential_id).exclude(state=State.SPENT).update(state=State.SPENT)


def credential_used(kept: Kept) -> None:
    """When it was last used, to the minute: not a write for every request."""
    now = timezone.now()
    if kept.used_at is not None and now - kept.used_at < USED_AT_STEP:
        return
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(_USED_SQL, [adapt(now), kept.id, adapt(now - USED_AT_STEP)])


def credential_noted(credential_id: int, note: dict[str, Any]) -> None:
    """Add to what a kind keeps about a credential (an MPP receipt)."""
    row = Credential.objects.filter(pk=credential_id).first()
    if row is not None:
        row.note = {**(row.note or {}), **note}
        row.save(update_fields=["note"])


def live_token_preimages() -> frozenset[str]:
    """The preimages that are part of a live or pending token (L402): with the macaroon they
    spend a household's balance, so a request carrying one is stopped before it leaves."""
    purposes = Credential.objects.filter(state__in=[State.LIVE, State.PENDING]).values(
        "payment_purpose"
    )
    preimages = Payment.objects.filter(token_may_be_live=True, purpose__in=purposes).exclude(
        preimage=""
    )
    return frozenset(preimages.values_list("preimage", flat=True))
