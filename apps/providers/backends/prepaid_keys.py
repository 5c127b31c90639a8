"""The prepaid kind's credential rows: a key being bought, live, and its open top-up.

Every change is a short transaction on one row (claimed in SQLite's IMMEDIATE transactions, or
under PostgreSQL's row locks), so two requests never both buy a key or a top-up for the same
provider; money itself is the wallet's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.providers import sealing
from apps.providers.backends.prepaid_api import Balance, Flavour
from apps.providers.models import Credential, Provider

SCHEME = "Bearer"


@dataclass(frozen=True)
class Kept:
    """A prepaid credential as a request sees it."""

    id: int
    state: str
    key: str  # "" until the provider has given it
    purpose: str  # the payment that bought it
    note: dict[str, Any]
    age_seconds: float

    @property
    def flavour(self) -> Flavour:
        return Flavour(self.note["flavour"])


def as_kept(row: Credential) -> Kept:
    age = (timezone.now() - row.created_at).total_seconds()
    key = sealing.unseal(row.secret_sealed)
    return Kept(row.id, row.state, key, row.payment_purpose, dict(row.note), age)


def key_kept(provider_id: int) -> Kept | None:
    """The provider's key (live, or being bought), newest first."""
    row = (
        Credential.objects.filter(provider_id=provider_id, scheme=SCHEME)
        .exclude(state=Credential.State.SPENT)
        .first()
    )
    return None if row is None else as_kept(row)


def flavour_known(provider_id: int) -> Flavour | None:
    """The flavour an earlier key of this provider found, so it is not asked again."""
    notes = Credential.objects.filter(provider_id=provider_id).values_list("note", flat=True)
    for note in notes[:20]:
        if isinstance(note, dict) and note.get("flavour") in {f.value for f in Flavour}:
            return Flavour(note["flavour"])
    return None


def key_claim(provider_id: int, purpose: str, flavour: Flavour) -> tuple[Kept, bool]:
    """The provider's key, or a new pending one this request buys (True): one at a time,
    decided in one transaction (SQLite's IMMEDIATE transactions, PostgreSQL's row lock)."""
    with transaction.atomic():
        list(Provider.objects.select_for_update().filter(id=provider_id))
        kept = key_kept(provider_id)
        if kept is not None:
            return kept, False
        row = Credential.objects.create(
            provider_id=provider_id,
            scheme=SCHEME,
            payment_purpose=purpose,
            state=Credential.State.PENDING,
            note={"flavour": str(flavour)},
        )
        return as_kept(row), True


def note_merge(credential_id: int, changes: dict[str, Any]) -> Kept:
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        row.note = {k: v for k, v in {**row.note, **changes}.items() if v is not None}
        row.save(update_fields=["note"])
        return as_kept(row)


def key_live(credential_id: int, key: str, note: dict[str, Any]) -> Kept:
    """The key is had: sealed, and live (whoever finished the purchase first wrote it)."""
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        if row.state != Credential.State.LIVE:
            row.secret_sealed = sealing.seal(key)
            row.state = Credential.State.LIVE
            row.note = {k: v for k, v in {**row.note, **note}.items() if v is not None}
            row.save(update_fields=["secret_sealed", "state", "note"])
        return as_kept(row)


def abandon(credential_id: int) -> None:
    """A purchase that paid nothing is dropped; a later request buys anew."""
    Credential.objects.filter(id=credential_id, state=Credential.State.PENDING).update(
        state=Credential.State.SPENT
    )


@dataclass(frozen=True)
class TopupClaim:
    """What a request short of balance may do: its own top-up (`mine`), wait on an earlier
    one still open (`earlier`), or nothing (`fresh`: a top-up ended since it read the key, so
    its short answer may predate it)."""

    mine: bool = False
    earlier: dict[str, Any] | None = None
    fresh: bool = False


def key_set_aside(credential_id: int) -> None:
    """The provider refuses the key: spent, kept for the owner to see, never sent again."""
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        if row.state == Credential.State.LIVE:
            row.state = Credential.State.SPENT
            row.note = {**row.note, "refused": timezone.now().isoformat()}
            row.save(update_fields=["state", "note"])


def topup_claim(credential_id: int, purpose: str, topups_seen: int) -> TopupClaim:
    """Write this request's top-up down before anything is asked or paid, unless another is
    open or one ended since the request read the key (one top-up at a time, and none twice
    for the same shortfall)."""
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        if row.note.get("topup"):
            return TopupClaim(earlier=dict(row.note["topup"]))
        if int(row.note.get("topups", 0)) > topups_seen:
            return TopupClaim(fresh=True)
        row.note = {**row.note, "topup": {"purpose": purpose, "at": timezone.now().timestamp()}}
        row.save(update_fields=["note"])
        return TopupClaim(mine=True)


class TopupTaken(Exception):
    """The top-up slot is no longer this request's."""


def topup_note(credential_id: int, purpose: str, invoice: dict[str, str]) -> dict[str, Any]:
    """The invoice of this request's top-up, written before it is paid. Another request may
    have cleared the slot as abandoned meanwhile: then this one pays nothing."""
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        slot = row.note.get("topup") or {}
        if slot.get("purpose") != purpose:
            raise TopupTaken("Another request took over this top-up; nothing was paid for it.")
        slot = {**slot, "invoice": invoice}
        row.note = {**row.note, "topup": slot}
        row.save(update_fields=["note"])
        return slot


def topup_clear(credential_id: int, purpose: str, *, credited: bool = False) -> None:
    """The open top-up is closed: credited (counted in `topups`), or dropped unpaid."""
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        if (row.note.get("topup") or {}).get("purpose") == purpose:
            note = {k: v for k, v in row.note.items() if k != "topup"}
            if credited:
                note["topups"] = int(note.get("topups", 0)) + 1
            row.note = note
            row.save(update_fields=["note"])


def balance_keep(credential_id: int, balance: Balance) -> None:
    if balance.msat is not None:
        Credential.objects.filter(id=credential_id).update(balance_msat=balance.msat)
    if balance.usd is not None:
        note_merge(credential_id, {"balance_usd": balance.usd})


def credential_used(credential_id: int, cost_msat: int | None) -> None:
    """An answer came on the key; Routstr's cost header comes off the balance it told."""
    used = Credential.objects.filter(id=credential_id)
    if cost_msat is not None:
        debited = used.filter(balance_msat__isnull=False).update(
            used_at=timezone.now(), balance_msat=F("balance_msat") - cost_msat
        )
        if debited:
            return
    used.update(used_at=timezone.now())
