"""Sharing, as the owner runs it: models on sale to strangers, models shared with friends within
a daily quota, and what both have used.

    offer_set(model, price_sat, ...) -> Offer     a local model on sale (or its new price)
    offer_stop(model)                             taken off sale
    share_set(friend, models, daily_requests, ...) -> Share
    share_remove(friend)
    shared_with(friend) -> names  what is shared with a friend
    quota_take(member, model)     before a friend's answer: shared? within today's quota?
    tokens_count(member, tokens)  after it: what it used
    friend_shown(friend)          what a friend is shared, and used today
    status() -> SharingStatus     offers, friends' shares and today's use, strangers' totals

A friend's day is the UTC day: the quota resets at midnight UTC, whatever the node's time zone,
so the time a refusal names is the same for a friend anywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import models, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.audit.services import audit_record
from apps.identity.models import Member, Role
from apps.inference.backends.base import AnswerRefused, RefusalCode
from apps.inference.models import LocalModel
from apps.providers import routing
from apps.providers import services as providers
from apps.sharing import announcing
from apps.sharing.models import Balance, Offer, Sale, Share, Usage
from apps.wallet import budgets
from apps.wallet.models import Budget

MAX_PRICE_SAT = 1_000_000  # per request or per 1,000 tokens: a typo's ceiling, not a market's
MAX_DAILY_REQUESTS = 1_000_000
MAX_DAILY_TOKENS = 1_000_000_000
MAX_OUTSIDE_CAP_SAT = 10_000_000


class SharingError(Exception):
    """A refused change; the message is for the person who asked. Nothing was changed."""


class AuditAction(models.TextChoices):
    """What sharing writes to the audit trail (apps.audit), with the labels people read."""

    OFFER_SET = "offer_set", "Model put on sale"
    OFFER_STOPPED = "offer_stopped", "Model taken off sale"
    SHARE_SET = "share_set", "Models shared with a friend"
    SHARE_REMOVED = "share_removed", "Sharing with a friend ended"


# Offers ------------------------------------------------------------------------------------


def offer_set(
    model: str,
    price_sat: int,
    *,
    per_1k_tokens: bool = False,
    max_request_sat: int | None = None,
    actor: str = "",
) -> Offer:
    """Put a local model on sale at `price_sat` a request, or a 1,000 tokens with at most
    `max_request_sat` for one request (what a stranger's balance must hold before it starts)."""
    _check_local(model)
    _check_sats(price_sat, "The price")
    if per_1k_tokens:
        if max_request_sat is None:
            raise SharingError("Priced per 1,000 tokens, a request needs a most it may cost.")
        _check_sats(max_request_sat, "The most a request may cost")
        if max_request_sat < price_sat:
            raise SharingError(
                "The most a request may cost must be at least the price of 1,000 tokens."
            )
    elif max_request_sat is not None:
        raise SharingError("A most per request applies only to a price per 1,000 tokens.")
    terms = {
        "price_msat": price_sat * 1000,
        "per_1k_tokens": per_1k_tokens,
        "max_request_msat": max_request_sat * 1000 if max_request_sat is not None else None,
    }
    with transaction.atomic():
        offer, _ = Offer.objects.update_or_create(model=model, defaults=terms)
        audit_record(AuditAction.OFFER_SET, actor=actor, subject=model, detail=_terms(offer))
        _listing_refresh_after_commit()
    return offer


def offer_stop(model: str, actor: str = "") -> None:
    with transaction.atomic():
        deleted, _ = Offer.objects.filter(model=model).delete()
        if not deleted:
            raise SharingError(f"The model '{model}' is not on sale.")
        audit_record(AuditAction.OFFER_STOPPED, actor=actor, subject=model)
        _listing_refresh_after_commit()


def _listing_refresh_after_commit() -> None:
    """What is on sale changed: the Nostr announcement says so, once the change is kept."""
    transaction.on_commit(announcing.listing_refresh_soon)


def _terms(offer: Offer) -> str:
    price = f"{offer.price_msat // 1000} sat"
    if not offer.per_1k_tokens:
        return f"{price} a request"
    most = (offer.max_request_msat or 0) // 1000
    return f"{price} per 1,000 tokens, at most {most} sat a request"


def _check_local(model: str) -> None:
    if not LocalModel.objects.filter(name=model).exists():
        raise SharingError(f"There is no local model named '{model}' (see `manage.py models`).")


def _check_sats(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PRICE_SAT:
        raise SharingError(f"{what} must be a whole number of sats from 1 to {MAX_PRICE_SAT:,}.")


# Friends' shares ---------------------------------------------------------------------------


def share_set(
    member: Member,
    model_names: list[str],
    daily_requests: int,
    daily_tokens: int | None = None,
    actor: str = "",
    *,
    outside_cap_sat: int | None = None,
) -> Share:
    """Share these models with a friend, within a daily quota. An outside model is paid by the
    owner, so sharing one needs `outside_cap_sat`: the friend's own allowance a day (the
    wallet's member budget), which every payment for them must stay within."""
    if member.role != Role.FRIEND:
        raise SharingError("Models are shared with friends; members use every model already.")
    names = _models_checked(model_names)
    _check_count(daily_requests, "Requests a day", MAX_DAILY_REQUESTS)
    if daily_tokens is not None:
        _check_count(daily_tokens, "Tokens a day", MAX_DAILY_TOKENS)
    outside = [name for name in names if "/" in name]
    if outside and outside_cap_sat is None:
        raise SharingError(
            "An outside model is paid by the owner: give the friend's own cap in sats a day."
        )
    if outside_cap_sat is not None:
        _check_count(outside_cap_sat, "The friend's cap", MAX_OUTSIDE_CAP_SAT, low=0)
    with transaction.atomic():
        share, _ = Share.objects.update_or_create(
            member=member,
            defaults={
                "model_names": names,
                "daily_requests": daily_requests,
                "daily_tokens": daily_tokens,
            },
        )
        if outside_cap_sat is not None:
            budgets.budget_set(
                Budget.Scope.MEMBER, Budget.Period.DAY, outside_cap_sat * 1000, member=member
            )
        audit_record(
            AuditAction.SHARE_SET,
            actor=actor,
            subject=member.pubkey,
            detail=_share_terms(share, outside_cap_sat),
        )
    return share


def share_remove(member: Member, actor: str = "") -> None:
    with transaction.atomic():
        deleted, _ = Share.objects.filter(member=member).delete()
        if not deleted:
            raise SharingError("Nothing is shared with that friend.")
        audit_record(AuditAction.SHARE_REMOVED, actor=actor, subject=member.pubkey)


def _models_checked(model_names: list[str]) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in model_names if name.strip()))
    if not names:
        raise SharingError("Name at least one model to share.")
    for name in names:
        if routing.route_name(name) is not None:
            raise SharingError(f"'{name}' is a route: share the models themselves.")
        if "/" in name:
            if providers.route_for(name) is None:
                raise SharingError(f"There is no outside model named '{name}'.")
        else:
            _check_local(name)
    return names


def _check_count(value: int, what: str, most: int, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= most:
        raise SharingError(f"{what} must be a whole number from {low} to {most:,}.")


def _share_terms(share: Share, outside_cap_sat: int | None) -> str:
    tokens = "" if share.daily_tokens is None else f", {share.daily_tokens} tokens"
    cap = "" if outside_cap_sat is None else f", outside cap {outside_cap_sat} sat a day"
    models_shared = ", ".join(share.model_names)
    return f"{models_shared}: {share.daily_requests} requests{tokens} a day{cap}"


# Quotas ------------------------------------------------------------------------------------


def shared_with(member: Member) -> frozenset[str]:
    """The models shared with this friend (none for anyone else: they need no share)."""
    names = Share.objects.filter(member=member).values_list("model_names", flat=True).first()
    return frozenset(names or ())


def quota_take(member: Member, model: str) -> None:
    """Before a friend's answer: the model must be shared with them and today's quota not used
    up; the request is counted (a conditional update, so two at once cannot both pass the
    last one). The owner and members have no quota."""
    if member.role != Role.FRIEND:
        return
    share = Share.objects.filter(member=member).first()
    if share is None or model not in share.model_names:
        raise AnswerRefused(RefusalCode.MODEL_NOT_SHARED, _not_shared(model, share))
    day = _today()
    Usage.objects.get_or_create(member=member, day=day)
    room = Q(requests__lt=share.daily_requests)
    if share.daily_tokens is not None:
        room &= Q(tokens__lt=share.daily_tokens)
    if not Usage.objects.filter(room, member=member, day=day).update(requests=F("requests") + 1):
        seconds = seconds_to_reset()
        raise AnswerRefused(
            RefusalCode.QUOTA_EXCEEDED, _over_quota(share, seconds), retry_after=seconds
        )


def tokens_count(member: Member, tokens: int) -> None:
    """An answer of a friend's ended having used `tokens` (prompt and answer): counted on the
    day it ended."""
    if member.role != Role.FRIEND or tokens <= 0:
        return
    day = _today()
    if not Usage.objects.filter(member=member, day=day).update(tokens=F("tokens") + tokens):
        Usage.objects.get_or_create(member=member, day=day)
        Usage.objects.filter(member=member, day=day).update(tokens=F("tokens") + tokens)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def reset_at(now: datetime | None = None) -> datetime:
    """When friends' quotas start again: the next midnight UTC."""
    moment = (now or timezone.now()).astimezone(UTC)
    return datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), UTC)


def seconds_to_reset(now: datetime | None = None) -> int:
    moment = now or timezone.now()
    return max(1, math.ceil((reset_at(moment) - moment).total_seconds()))


def _not_shared(model: str, share: Share | None) -> str:
    if share is None:
        return "The owner has not shared any model with you on this node."
    shared = ", ".join(share.model_names)
    return f"The model '{model}' is not shared with you. Shared with you: {shared}."


def _over_quota(share: Share, seconds: int) -> str:
    tokens = "" if share.daily_tokens is None else f" or {share.daily_tokens:,} tokens"
    hours, minutes = seconds // 3600, math.ceil(seconds % 3600 / 60)
    wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return (
        f"You have used today's quota ({share.daily_requests:,} requests{tokens}). "
        f"It resets at 00:00 UTC, in {wait}."
    )


# Status ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferShown:
    model: str
    price_msat: int
    per_1k_tokens: bool
    max_request_msat: int | None


@dataclass(frozen=True)
class FriendShown:
    npub: str
    name: str
    models: tuple[str, ...]
    daily_requests: int
    daily_tokens: int | None
    requests_today: int
    tokens_today: int


@dataclass(frozen=True)
class StrangersShown:
    sales: int
    sold_msat: int  # what every sale cost, in all
    sales_today: int
    balances: int  # paid balances not yet expired
    unspent_msat: int  # what they still hold


@dataclass(frozen=True)
class SharingStatus:
    offers: tuple[OfferShown, ...]
    friends: tuple[FriendShown, ...]
    strangers: StrangersShown
    resets_at: datetime

    def as_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["resets_at"] = self.resets_at.isoformat()
        return shown


def status() -> SharingStatus:
    offers = tuple(
        OfferShown(offer.model, offer.price_msat, offer.per_1k_tokens, offer.max_request_msat)
        for offer in Offer.objects.all()
    )
    return SharingStatus(offers, _friends_shown(), _strangers_shown(), reset_at())


def friend_shown(member: Member) -> FriendShown | None:
    """What is shared with this friend and what they used of it today (their own page)."""
    share = Share.objects.filter(member=member).select_related("member").first()
    if share is None:
        return None
    return _shown(share, Usage.objects.filter(member=member, day=_today()).first())


def _friends_shown() -> tuple[FriendShown, ...]:
    used = {
        usage.member_id: usage for usage in Usage.objects.filter(day=_today()).order_by("member_id")
    }
    shares = Share.objects.select_related("member").order_by("member__pubkey")
    return tuple(_shown(share, used.get(share.member_id)) for share in shares)


def _shown(share: Share, usage: Usage | None) -> FriendShown:
    return FriendShown(
        share.member.npub,
        share.member.display_name,
        tuple(share.model_names),
        share.daily_requests,
        share.daily_tokens,
        usage.requests if usage else 0,
        usage.tokens if usage else 0,
    )


def _strangers_shown() -> StrangersShown:
    midnight = datetime.combine(_today(), datetime.min.time(), UTC)
    sold = Sale.objects.aggregate(
        sales=Count("id"),
        total=Coalesce(Sum("cost_msat"), 0),
        today=Count("id", filter=Q(created_at__gte=midnight)),
    )
    held = Balance.objects.filter(expires_at__gt=timezone.now(), balance_msat__gt=0).aggregate(
        balances=Count("id"), unspent=Coalesce(Sum("balance_msat"), 0)
    )
    return StrangersShown(
        sold["sales"], sold["total"], sold["today"], held["balances"], held["unspent"]
    )
