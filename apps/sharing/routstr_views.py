"""Routstr's HTTP endpoints (lightning.md §3.1), in its shapes, for strangers with no account:

    POST /lightning/invoice {"amount_sats", "purpose": "create"|"topup"}   (topup: Bearer sk-…)
    GET  /lightning/invoice/<invoice_id>/status
    POST /lightning/recover {"bolt11"}
    GET  /v1/balance/info (Bearer sk-…)        GET /v1/info
    POST /v1/chat/completions (Bearer sk-…)    reached from the API's own view

Every one is refused by its size before anything reads it, then counted against the client
address's limit. Routstr is FastAPI: its errors are `{"detail": …}`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from apps.inference.backends.base import AnswerRefused
from apps.inference.chat_request import OpenAIError, parse_chat_request
from apps.sharing import guard, keys, selling, shaping
from apps.sharing.keys import KeyRefused
from apps.sharing.models import Balance
from apps.wallet.services import PaymentRefused

logger = logging.getLogger(__name__)
View = Callable[..., HttpResponseBase]


def bearer_key(request: HttpRequest) -> str | None:
    """The `sk-…` key of `Authorization: Bearer sk-…` (the household's own keys are `sov_…`)."""
    value = str(request.headers.get("Authorization", ""))
    scheme, _, credential = value.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential.startswith(keys.KEY_PREFIX):
        return None
    return credential


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JsonResponse:
    return JsonResponse({"detail": message}, status=status, headers=headers)


def _refusal_before_reading(request: HttpRequest) -> JsonResponse | None:
    try:
        guard.size_checked(request)
        guard.admitted(request)
    except guard.Refused as refused:
        return _detail(refused.status, str(refused), refused.headers() or None)
    return None


def stranger_endpoint(method: str) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method != method:
                return _detail(405, "Method Not Allowed")
            refused = _refusal_before_reading(request)
            if refused is not None:
                return refused
            try:
                return view(request, *args, **kwargs)
            except KeyRefused as refusal:
                return _detail(refusal.status, str(refusal))
            except guard.Refused as capped:
                return _detail(capped.status, str(capped), capped.headers() or None)
            except PaymentRefused:
                return _unlogged(_detail(503, "The node cannot make an invoice now; try later."))
            except Exception as error:
                logger.error("%s failed: %s", view.__name__, type(error).__name__)
                return _unlogged(_detail(500, "The node failed to answer this request."))

        return csrf_exempt(wrapped)  # strangers hold no cookie: nothing to forge

    return decorate


def _unlogged(response: JsonResponse) -> JsonResponse:
    """Django logs a 5xx answer with its path, and a status path holds an invoice id, which
    leads to its key: the failure was logged above without it. Django's own mark of a
    response it has logged."""
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = guard.body_read(request)
    except guard.Refused as refused:
        raise KeyRefused(refused.status, str(refused)) from None
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise KeyRefused(422, "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise KeyRefused(422, "The body must be a JSON object.")
    return body


@stranger_endpoint("POST")
def invoice_create(request: HttpRequest) -> HttpResponseBase:
    body = _json_body(request)
    purpose = body.get("purpose", "create")
    if purpose == "create":
        address = guard.address_of(request)
        guard.offer_admitted(address)
        made = keys.key_invoice_create(body.get("amount_sats"))
        guard.offer_counted(address)
    elif purpose == "topup":
        key = bearer_key(request)
        if key is None:
            raise KeyRefused(401, "Authorization bearer api key is required for topup")
        made = keys.key_topup_create(key, body.get("amount_sats"))
    else:
        raise KeyRefused(422, "purpose must be create or topup")
    return JsonResponse(made.as_json())


@stranger_endpoint("GET")
def invoice_status(request: HttpRequest, invoice_id: str) -> HttpResponseBase:
    return JsonResponse(keys.invoice_status(invoice_id).as_json())


@stranger_endpoint("POST")
def invoice_recover(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse(keys.invoice_recover(_json_body(request).get("bolt11")).as_json())


@stranger_endpoint("GET")
def balance_info(request: HttpRequest) -> HttpResponseBase:
    key = bearer_key(request)
    if key is None:
        raise KeyRefused(401, "API key required")
    return JsonResponse(keys.balance_info(key))


@stranger_endpoint("GET")
def node_info(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse(keys.node_info())


# The chat --------------------------------------------------------------------------------


async def key_chat(request: HttpRequest, key: str) -> HttpResponseBase:
    """`/v1/chat/completions` paid from a key's balance: OpenAI's shapes, Routstr's 402 and
    cost headers. The API's view has checked the method and wraps OpenAIError."""
    from apps.inference.api import chat_sampling, refusal_error  # it calls here

    try:
        body = guard.body_read(request)
        await sync_to_async(guard.admitted)(request)
    except guard.Refused as refused:
        return _openai_shaped(refused)
    try:
        balance = await sync_to_async(keys.key_balance)(key)
    except KeyRefused as refusal:
        if refusal.status == 503:  # not known to be unpaid: ask again, never pay again
            raise OpenAIError(str(refusal), status=503, kind="server_error") from None
        raise OpenAIError(str(refusal), status=refusal.status, code="invalid_api_key") from None
    chat = parse_chat_request(body)
    offer = await sync_to_async(selling.offer_for)(chat.model)
    if offer is None:
        message = f"The model '{chat.model}' is not for sale here."
        raise OpenAIError(message, status=404, param="model", code="model_not_found")
    try:
        sold = await selling.sold_answer(balance, offer, chat.messages, chat_sampling(chat))
    except selling.BalanceShort as short:
        return _balance_short(short)
    except AnswerRefused as refusal:
        raise refusal_error(refusal) from None
    return await shaping.sold_response(
        chat, sold, offer, lambda: _answer_audited(balance, offer.model)
    )


def _answer_audited(balance: Balance, model: str) -> None:
    with transaction.atomic():
        keys.answer_audited(balance, model)


def _openai_shaped(refused: guard.Refused) -> JsonResponse:
    """The guard's refusal as OpenAI's error, with Routstr's `detail` beside it."""
    from apps.sharing.stranger import refused_shaped

    response = refused_shaped(refused)
    body = json.loads(response.content)
    body["detail"] = body["error"]["message"]
    shaped = JsonResponse(body, status=response.status_code)
    if response.has_header("Retry-After"):
        shaped["Retry-After"] = response["Retry-After"]
    return shaped


def _balance_short(short: selling.BalanceShort) -> JsonResponse:
    """Routstr's 402: no Lightning challenge, the numbers in msat. routstr-core (FastAPI) puts
    them in `detail` (which Sovereign's own prepaid client reads), its earlier release in
    `details`, and OpenAI's clients read `error`: all three are given."""
    numbers = {
        "balance": short.balance_msat,
        "required": short.required_msat,
        "shortfall": max(short.required_msat - short.balance_msat, 0),
    }
    error = {
        "message": f"Insufficient balance: {short.required_msat} msats required for this "
        f"model; {short.balance_msat} msats available. Top up the key with an invoice.",
        "type": "insufficient_quota",
        "code": "insufficient_balance",
    }
    body = {"error": error, "details": numbers, "detail": {"error": error, **numbers}}
    return JsonResponse(body, status=402)
