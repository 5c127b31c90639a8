"""The owner's Sharing page: the models on sale and their prices, what each friend may use and
has used today, where strangers find the node on Nostr (announce, withdraw), and what
strangers bought."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.identity import services as identity
from apps.identity.access import owner_required
from apps.identity.models import Member, Role
from apps.inference.models import LocalModel
from apps.sharing import announcing, sales, services
from apps.sharing.announcing import ListingError, Outcome
from apps.sharing.models import Balance, Listing, Offer, Sale, Share, Usage
from apps.sharing.services import SharingError

LATEST_SALES = 20
MAX_WHOLE = 10**12  # past any price or quota: a typo, not a number to store


@dataclass(frozen=True)
class FriendRow:
    member: Member
    share: Share | None
    requests_today: int
    tokens_today: int


@never_cache
@require_GET
@owner_required
def sharing_page(request: HttpRequest) -> HttpResponse:
    return _page(request)


def _page(request: HttpRequest, status: int = 200, **refused: Any) -> HttpResponse:
    """The page; `refused` holds what the owner typed and what is wrong with it."""
    row = Listing.objects.filter(pk=1).first() or Listing()
    context = {
        "local_models": list(LocalModel.objects.order_by("name").values_list("name", flat=True)),
        "offers": list(Offer.objects.all()),
        "friends": _friend_rows(),
        "listing": row,
        "announced": announcing.is_announced(row),
        "relays": settings.NOSTR_RELAYS,
        "node_npub": identity.node_npub(),
        "provider_id": announcing.provider_id(),
        "strangers": _strangers(),
        "sales": [
            (sale, sales.kind_shown(sale.balance.kind))
            for sale in Sale.objects.select_related("balance")[:LATEST_SALES]
        ],
        "urls_typed": "\n".join(row.urls),
        **refused,
    }
    return render(request, "sharing/page.html", context, status=status)


def _friend_rows() -> list[FriendRow]:
    friends = list(Member.objects.filter(role=Role.FRIEND).order_by("pk"))
    shares = {share.member_id: share for share in Share.objects.filter(member__in=friends)}
    # The quota's day is UTC's, as the usage is counted.
    today = {
        usage.member_id: usage
        for usage in Usage.objects.filter(day=timezone.now().date(), member__in=friends)
    }
    return [
        FriendRow(
            friend,
            shares.get(friend.pk),
            today[friend.pk].requests if friend.pk in today else 0,
            today[friend.pk].tokens if friend.pk in today else 0,
        )
        for friend in friends
    ]


def _strangers() -> dict[str, int]:
    sold = Sale.objects.aggregate(count=Count("id"), msat=Sum("cost_msat"))
    held = Balance.objects.filter(balance_msat__gt=0).aggregate(
        count=Count("id"), msat=Sum("balance_msat")
    )
    return {
        "sales": sold["count"],
        "earned_msat": sold["msat"] or 0,
        "balances": held["count"],
        "held_msat": held["msat"] or 0,
    }


# --- what is on sale ------------------------------------------------------------------------


@require_POST
@owner_required
def offer_save(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    form = request.POST
    per_1k_tokens = form.get("pricing") == "tokens"
    try:
        price = _whole(form.get("price_sat", ""), "The price")
        most = _whole(form.get("max_request_sat", ""), "The most a request costs", optional=True)
        offer = services.offer_set(
            form.get("model", ""),
            price or 0,
            per_1k_tokens=per_1k_tokens,
            max_request_sat=most,
            actor=owner.pubkey,
        )
    except SharingError as error:
        return _page(request, 400, offer_error=str(error), offer_typed=form)
    messages.success(request, f"{offer.model} is on sale.", extra_tags="offers")
    return _back_to("offers")


@require_POST
@owner_required
def offer_stop(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    model = request.POST.get("model", "")
    try:
        services.offer_stop(model, actor=owner.pubkey)
    except SharingError as error:
        return _page(request, 400, offer_error=str(error))
    messages.success(request, f"{model} is no longer on sale.", extra_tags="offers")
    return _back_to("offers")


# --- friends ----------------------------------------------------------------------------------


@require_POST
@owner_required
def share_save(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    form = request.POST
    friend = _friend(form.get("member", ""))
    try:
        if friend is None:
            raise SharingError("That person is not a friend on this node.")
        requests_a_day = _whole(form.get("daily_requests", ""), "Requests a day")
        tokens_a_day = _whole(form.get("daily_tokens", ""), "Tokens a day", optional=True)
        services.share_set(
            friend,
            form.getlist("models"),
            requests_a_day or 0,
            tokens_a_day,
            actor=owner.pubkey,
        )
    except SharingError as error:
        return _page(request, 400, share_error=str(error))
    messages.success(request, f"Saved what {friend.display_name} may use.", extra_tags="friends")
    return _back_to("friends")


@require_POST
@owner_required
def share_stop(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    friend = _friend(request.POST.get("member", ""))
    try:
        if friend is None:
            raise SharingError("That person is not a friend on this node.")
        services.share_remove(friend, actor=owner.pubkey)
    except SharingError as error:
        return _page(request, 400, share_error=str(error))
    shown = f"Nothing is shared with {friend.display_name} now."
    messages.success(request, shown, extra_tags="friends")
    return _back_to("friends")


def _friend(typed: str) -> Member | None:
    if not typed.isascii() or not typed.isdigit():
        return None
    return Member.objects.filter(pk=int(typed), role=Role.FRIEND).first()


# --- being found --------------------------------------------------------------------------------


@require_POST
@owner_required
def listing_save(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    typed = request.POST.get("urls", "")
    try:
        announcing.listing_set(typed.splitlines(), actor=owner.pubkey)
    except ListingError as error:
        return _page(request, 400, listing_error=str(error), urls_typed=typed)
    messages.success(request, "Saved the addresses.", extra_tags="listing")
    return _back_to("listing")


@require_POST
@owner_required
def announce(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    try:
        outcome = announcing.announce(actor=owner.pubkey)
    except ListingError as error:
        return _page(request, 400, listing_error=str(error))
    _relays_told(request, "Announced on", outcome)
    return _back_to("listing")


@require_POST
@owner_required
def withdraw(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    try:
        outcome = announcing.withdraw(actor=owner.pubkey)
    except ListingError as error:
        return _page(request, 400, listing_error=str(error))
    _relays_told(request, "Asked to delete the announcement:", outcome)
    return _back_to("listing")


def _relays_told(request: HttpRequest, headline: str, outcome: Outcome) -> None:
    messages.success(request, f"{headline} {', '.join(outcome.accepted)}.", extra_tags="listing")
    if outcome.refused:
        refused = "; ".join(f"{url}: {why}" for url, why in outcome.refused.items())
        messages.warning(request, f"Not taken by {refused}.", extra_tags="listing")


# --- small helpers ------------------------------------------------------------------------------


def _whole(typed: str, what: str, *, optional: bool = False) -> int | None:
    typed = typed.strip().replace(",", "").replace("_", "")
    if not typed and optional:
        return None
    if not typed.isascii() or not typed.isdigit() or int(typed) > MAX_WHOLE:
        raise SharingError(f"{what}: type a whole number.")
    return int(typed)


def _back_to(section: str) -> HttpResponse:
    return redirect(f"{reverse('sharing:page')}#{section}")
