"""What the owner sells and shares (a stand-in with only what the Sharing page calls: the
sharing services proper replace this file).

    offer_set(model, price_sat, ...) -> Offer    put a local model on sale, or change its price
    offer_stop(model)                            take it off sale
    share_set(member, model_names, ...) -> Share share local models with a friend, with quotas
    share_remove(member)                         share nothing with them any more

Every change is audited, and a change to what is on sale refreshes the Nostr announcement.
"""

from __future__ import annotations

from django.db import transaction

from apps.audit.services import audit_record
from apps.identity.models import Member, Role
from apps.inference.models import LocalModel
from apps.sharing.models import Offer, Share

MAX_PRICE_SAT = 1_000_000
MAX_DAILY_REQUESTS = 1_000_000


class SharingError(Exception):
    """What the owner asked for cannot be done; the message says why, nothing changed."""


def offer_set(
    model: str,
    price_sat: int,
    *,
    per_1k_tokens: bool = False,
    max_request_sat: int | None = None,
    actor: str = "",
) -> Offer:
    _local_model(model)
    _sats(price_sat, "The price")
    if per_1k_tokens:
        if max_request_sat is None:
            raise SharingError("Priced per 1,000 tokens, a request needs a most it may cost.")
        _sats(max_request_sat, "The most a request may cost")
    fields = {
        "price_msat": price_sat * 1000,
        "per_1k_tokens": per_1k_tokens,
        "max_request_msat": max_request_sat * 1000 if per_1k_tokens and max_request_sat else None,
    }
    with transaction.atomic():
        offer, _ = Offer.objects.update_or_create(model=model, defaults=fields)
        audit_record("offer_set", actor=actor, subject=model, detail=_price_shown(offer))
        _refresh_after_commit()
    return offer


def offer_stop(model: str, actor: str = "") -> None:
    with transaction.atomic():
        deleted, _ = Offer.objects.filter(model=model).delete()
        if not deleted:
            raise SharingError(f"{model} is not on sale.")
        audit_record("offer_stopped", actor=actor, subject=model)
        _refresh_after_commit()


def share_set(
    member: Member,
    model_names: list[str],
    daily_requests: int,
    daily_tokens: int | None = None,
    actor: str = "",
) -> Share:
    if member.role != Role.FRIEND:
        raise SharingError("Models are shared with friends; members use them all already.")
    if not model_names:
        raise SharingError("Choose at least one model to share.")
    for name in model_names:
        _local_model(name)
    if not 1 <= daily_requests <= MAX_DAILY_REQUESTS:
        raise SharingError(f"Requests a day: a whole number from 1 to {MAX_DAILY_REQUESTS:,}.")
    if daily_tokens is not None and daily_tokens < 1:
        raise SharingError("Tokens a day: a whole number above 0, or empty for no limit.")
    fields = {
        "model_names": sorted(set(model_names)),
        "daily_requests": daily_requests,
        "daily_tokens": daily_tokens,
    }
    with transaction.atomic():
        share, _ = Share.objects.update_or_create(member=member, defaults=fields)
        audit_record(
            "share_set",
            actor=actor,
            subject=member.pubkey,
            detail=f"{', '.join(share.model_names)}; {daily_requests} requests a day",
        )
    return share


def share_remove(member: Member, actor: str = "") -> None:
    with transaction.atomic():
        deleted, _ = Share.objects.filter(member=member).delete()
        if not deleted:
            raise SharingError("Nothing is shared with them.")
        audit_record("share_removed", actor=actor, subject=member.pubkey)


def _local_model(name: str) -> None:
    if not LocalModel.objects.filter(name=name).exists():
        raise SharingError(f"There is no local model named {name!r} on this node.")


def _sats(value: int, what: str) -> None:
    if not 1 <= value <= MAX_PRICE_SAT:
        raise SharingError(f"{what} is a whole number of sats from 1 to {MAX_PRICE_SAT:,}.")


def _price_shown(offer: Offer) -> str:
    if offer.per_1k_tokens:
        most = (offer.max_request_msat or 0) // 1000
        return f"{offer.price_msat // 1000} sat per 1,000 tokens, at most {most} sat a request"
    return f"{offer.price_msat // 1000} sat per request"


def _refresh_after_commit() -> None:
    from apps.sharing import announcing

    transaction.on_commit(announcing.listing_refresh_soon)
