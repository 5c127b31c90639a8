"""Strangers over HTTP: `/v1/chat/completions` paid per request with L402 (LSAT) or MPP, the
models on sale in `/v1/models`, and the agent-spec manifest `/.well-known/l402.json`.

In order, for a request with no credential or a payment one, once anything is on sale:

1. a body over SHARING_MAX_REQUEST_BYTES: 413, before anything reads it;
2. a model not on sale: not ours to answer (the household's API answers it: 401 as before);
3. over SHARING_REQUESTS_PER_MINUTE from one client address (an IPv6 one by its /64): 429
   with Retry-After, nothing issued (guard.py, as for Routstr's endpoints);
4. no credential: 402 with L402 (LSAT line first) and MPP challenges, each with its invoice;
   429 instead once the address was given guard.OFFERS_PER_ADDRESS such 402s within the hour
   (503 while the node holds guard.UNPAID_OVERALL unpaid sale invoices);
5. a credential that is not the node's, or whose preimage is not its invoice's: 402 with fresh
   challenges, as Aperture answers (the spec's 401 would leave a client with nothing to pay;
   the problem body says what was wrong);
6. the node does not say whether it was paid: 503 with Retry-After, never a new invoice;
7. unpaid: 402 with fresh challenges; a balance that cannot pay this answer's most: 402 with
   a top-up of that balance by what it lacks (and fresh challenges in the other scheme);
8. the answer, through the one pipeline as a stranger (selling.sold_answer), with a receipt.

A stranger sees only the answer, its cost, its balance and the receipt: no conversation, no
member, no outside provider (Origin.SALE answers from local models only). Everything is audited;
the refusals anyone can cause are folded on the audit page, and written once a minute per
address at most.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

from apps.audit.services import audit_record
from apps.inference import api
from apps.inference.backends.base import AnswerRefused
from apps.inference.chat_request import ChatRequest, OpenAIError, parse_chat_request
from apps.sharing import balances, guard, l402, selling, shaping
from apps.sharing.balances import Paid
from apps.sharing.models import Offer

logger = logging.getLogger(__name__)

PAYMENT_SCHEMES = ("", "l402", "lsat", "payment")
RETRY_AFTER_SECONDS = 5
ACTOR = "stranger"
REFUSAL_SHAPES = {
    413: ("request_too_large", "invalid_request_error"),
    429: ("rate_limit_exceeded", "rate_limit_error"),
}


class Action:
    CHALLENGED = "sale_challenged"
    REFUSED = "sale_credential_refused"
    ANSWERED = "sale_answered"


AUDIT_LABELS = {
    Action.CHALLENGED: "A stranger was asked to pay",
    Action.REFUSED: "A stranger's payment credential was refused",
    Action.ANSWERED: "An answer was sold",
}
AUDIT_FOLDED = (Action.CHALLENGED, Action.REFUSED)


class ChallengeResponse(JsonResponse):
    """A 402 with several `WWW-Authenticate` lines. Django keeps one value per header name, so
    the lines after the first are given to the server handlers (WSGI and ASGI both send
    `response.items()`) beside the usual headers."""

    def __init__(self, challenges: l402.Challenges) -> None:
        super().__init__(challenges.problem, status=402, content_type="application/problem+json")
        first, *rest = challenges.headers
        self["WWW-Authenticate"] = first
        self.more_challenges = [("WWW-Authenticate", line) for line in rest]

    def items(self) -> Any:
        return [*super().items(), *self.more_challenges]


def is_stranger(request: HttpRequest) -> bool:
    """No credential, or a payment one, while something is on sale."""
    scheme = l402.scheme_of(request.headers.get("Authorization", ""))
    return scheme in PAYMENT_SCHEMES and Offer.objects.exists()


async def chat_completions(request: HttpRequest) -> HttpResponseBase | None:
    """A stranger's answer or why not; None when the model asked for is not on sale."""
    try:
        body = guard.body_read(request)
        chat = parse_chat_request(body)
        offer = await sync_to_async(selling.offer_for)(chat.model)
        if offer is None:
            return None
        address = await sync_to_async(guard.admitted)(request)
        return await _paid_for(request, chat, offer, address)
    except guard.Refused as refused:
        return refused_shaped(refused)


def refused_shaped(refused: guard.Refused) -> JsonResponse:
    """The guard's refusal as OpenAI's error."""
    code, kind = REFUSAL_SHAPES.get(refused.status, ("unavailable", "server_error"))
    error = OpenAIError(str(refused), status=refused.status, code=code, kind=kind)
    return error.response(refused.headers() or None)


async def _paid_for(
    request: HttpRequest, chat: ChatRequest, offer: Offer, address: str
) -> HttpResponseBase:
    authorization = request.headers.get("Authorization", "")
    if not authorization:
        why = f"Pay to get an answer from {offer.model}."
        return await sync_to_async(_challenged)(offer, why, address)
    try:
        presented = await sync_to_async(l402.presented)(authorization)
    except l402.CredentialRefused as refused:
        await sync_to_async(guard.refusal_audited)(Action.REFUSED, address, str(refused))
        return await sync_to_async(_challenged)(offer, str(refused), address)
    return await _answered(request, chat, offer, presented, address)


def _challenged(
    offer: Offer, why: str, address: str, short: l402.Presented | None = None
) -> HttpResponse:
    """A 402, while the node holds few unpaid invoices. A client with no paid balance is given
    at most guard.OFFERS_PER_ADDRESS a hour; one whose paid balance ran short is not counted
    (its scheme's top-up is the same open invoice again: balances.topup_open_or_reuse)."""
    fresh = short is None
    guard.offer_admitted(address, per_address=fresh)
    challenges = l402.challenges_offered(offer, why, short)
    if fresh:
        guard.offer_counted(address)
    _audited(Action.CHALLENGED, address, f"{offer.model}: {why}")
    return ChallengeResponse(challenges)


def _audited(action: str, address: str, detail: str) -> None:
    with transaction.atomic():
        audit_record(action, actor=f"{ACTOR} {address}", detail=detail)


async def _answered(
    request: HttpRequest,
    chat: ChatRequest,
    offer: Offer,
    presented: l402.Presented,
    address: str,
) -> HttpResponseBase:
    paid = await sync_to_async(_paid)(presented)
    if paid == Paid.UNKNOWN:
        unknown = OpenAIError(
            "The node cannot say yet whether this token was paid; ask again shortly with the "
            "same credential. Do not pay again.",
            status=503,
            code="payment_unknown",
            kind="server_error",
        )
        return unknown.response({"Retry-After": str(RETRY_AFTER_SECONDS)})
    if paid == Paid.NO:
        why = "This token's invoice is not paid."
        return await sync_to_async(_challenged)(offer, why, address)
    try:
        sold = await selling.sold_answer(
            presented.balance, offer, chat.messages, api.chat_sampling(chat)
        )
    except selling.BalanceShort as short:
        return await sync_to_async(_challenged)(offer, str(short), address, presented)
    except AnswerRefused as refusal:
        raise api.refusal_error(refusal) from None
    detail = f"{offer.model}, balance {presented.balance.pk}"
    response = await shaping.sold_response(
        chat, sold, offer, lambda: _audited(Action.ANSWERED, address, detail)
    )
    if payment_receipt := _payment_receipt(presented, request):
        response["Payment-Receipt"] = payment_receipt
    return response


def _paid(presented: l402.Presented) -> Paid:
    """Whether the node says the invoice this credential shows was paid: that invoice's own
    state (a top-up's, when it shows one), so a node silent about it is unknown, never unpaid.
    Once it was, any other paid invoice of its balance is credited too (once each)."""
    paid = balances.credit_paid(presented.credit)
    if paid == Paid.YES:
        balances.balance_credited(presented.balance)
    return paid


def _payment_receipt(presented: l402.Presented, request: HttpRequest) -> str:
    """MPP's own receipt of the charge (draft-httpauth-payment), for a Payment credential."""
    if l402.scheme_of(request.headers.get("Authorization", "")) != "payment":
        return ""
    return l402.payment_receipt(presented)


# What strangers may read ------------------------------------------------------------------


def models_on_sale() -> JsonResponse:
    """The models on sale in OpenAI's list shape, priced as Routstr's clients read them
    (`sats_pricing`, sats per token or per request) and exactly under `sovereign`."""
    entries = [_model_entry(offer) for offer in Offer.objects.all()]
    return JsonResponse({"object": "list", "data": entries})


def _model_entry(offer: Offer) -> dict[str, Any]:
    most = selling.request_max_msat(offer)
    per_token_sats = offer.price_msat / 1_000_000 if offer.per_1k_tokens else 0
    sats_pricing = {
        "prompt": per_token_sats,
        "completion": per_token_sats,
        "request": 0 if offer.per_1k_tokens else offer.price_msat / 1000,
        "max_cost": most / 1000,
    }
    sovereign = {"price_msat": offer.price_msat, "per_1k_tokens": offer.per_1k_tokens,
                 "max_request_msat": most,
                 "token_msat": selling.token_price_msat(offer)}  # fmt: skip
    return {
        "id": offer.model,
        "object": "model",
        "created": int(offer.created_at.timestamp()),
        "owned_by": "sovereign",
        "sats_pricing": sats_pricing,
        "sovereign": sovereign,
    }


def manifest() -> dict[str, Any]:
    """The agent-spec manifest: one fixed-price resource per model on sale, priced at what a
    fresh token's invoice asks (clients refuse an invoice above the price shown; the token then
    pays for answers until its balance runs out)."""
    resources = [
        {
            "path": "/v1/chat/completions",
            "method": "POST",
            "capability": offer.model,
            "description": l402.invoice_description(offer),
            "pricing": {"model": "fixed", "price_msat": selling.token_price_msat(offer)},
        }
        for offer in Offer.objects.all()
    ]
    service = {
        "name": "sovereign",
        "description": "Answers from this household's local models, paid per request.",
        "schemes": ["L402", "Payment"],
        "resources": resources,
    }
    return {"version": "0", "services": [service]}


async def well_known_l402(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return JsonResponse({"error": "Use GET."}, status=405)
    offered = await sync_to_async(_manifest_if_selling)()
    if offered is None:
        return JsonResponse({"error": "Nothing is on sale here."}, status=404)
    return JsonResponse(offered)


def _manifest_if_selling() -> dict[str, Any] | None:
    return manifest() if Offer.objects.exists() else None
