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
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from apps.audit.services import audit_record
from apps.identity import services as identity
from apps.identity.access import client_address
from apps.inference.backends.base import AnswerRefused
from apps.inference.chat_request import OpenAIError, parse_chat_request, read_body
from apps.sharing import keys, selling
from apps.sharing.keys import KeyRefused
from apps.sharing.models import Balance, Offer, Sale
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


def _too_large(request: HttpRequest) -> bool:
    declared = str(request.META.get("CONTENT_LENGTH") or "0")
    return declared.isdigit() and int(declared) > settings.SHARING_MAX_REQUEST_BYTES


def _over_limit(request: HttpRequest) -> bool:
    """Counts this request against its address; True once the minute's limit is reached."""
    key = f"sharing:{client_address(request)}"
    window = timedelta(minutes=1)
    if identity.attempt_allowed(key, settings.SHARING_REQUESTS_PER_MINUTE, window):
        return False
    with transaction.atomic():
        audit_record("sharing_limited", detail=request.path[:100])
    return True


def _refusal_before_reading(request: HttpRequest) -> JsonResponse | None:
    if _too_large(request):
        limit = settings.SHARING_MAX_REQUEST_BYTES
        return _detail(413, f"The request is larger than this node takes ({limit} bytes).")
    if _over_limit(request):
        return _detail(429, "Too many requests; wait a minute.", {"Retry-After": "60"})
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
    if len(request.body) > settings.SHARING_MAX_REQUEST_BYTES:
        raise KeyRefused(413, "The request is larger than this node takes.")
    try:
        body = json.loads(request.body or b"{}")
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
        made = keys.key_invoice_create(body.get("amount_sats"))
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
    from apps.inference.api import Answer, _refusal_error, chat_sampling  # it calls here

    refused = await sync_to_async(_refusal_before_reading)(request)
    if refused is not None:
        return _openai_shaped(refused)
    body = read_body(request)
    if len(body) > settings.SHARING_MAX_REQUEST_BYTES:
        raise OpenAIError("The request is larger than this node takes.", status=413)
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
        raise _refusal_error(refusal) from None
    await sync_to_async(_answer_audited)(balance, offer.model)
    answer = Answer(chat)
    if chat.stream:
        response = StreamingHttpResponse(answer.sse(sold.events), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    whole = JsonResponse(await answer.whole(sold.events))
    if sold.sale is not None:
        for name, value in _cost_headers(offer, sold.sale).items():
            whole[name] = value
    return whole


def _answer_audited(balance: Balance, model: str) -> None:
    with transaction.atomic():
        keys.answer_audited(balance, model)


def _openai_shaped(refused: JsonResponse) -> JsonResponse:
    message = json.loads(refused.content)["detail"]
    code = "rate_limit_exceeded" if refused.status_code == 429 else "request_too_large"
    kind = "rate_limit_error" if refused.status_code == 429 else "invalid_request_error"
    body = {"message": message, "type": kind, "param": None, "code": code}
    response = JsonResponse({"error": body, "detail": message}, status=refused.status_code)
    if refused.has_header("Retry-After"):
        response["Retry-After"] = refused["Retry-After"]
    return response


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


def _cost_headers(offer: Offer, sale: Sale) -> dict[str, str]:
    """Routstr's cost headers (msat); per 1,000 tokens, the part the prompt cost and the rest."""
    headers = {"X-Routstr-Cost-Msats": str(sale.cost_msat)}
    if offer.per_1k_tokens:
        prompt = min(selling.cost_msat(offer, sale.prompt_tokens, 0), sale.cost_msat)
        headers["X-Routstr-Input-Cost-Msats"] = str(prompt)
        headers["X-Routstr-Output-Cost-Msats"] = str(sale.cost_msat - prompt)
    return headers
