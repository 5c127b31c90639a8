"""A sold answer as the HTTP response a stranger gets, the same for every way of paying:

    whole: the chat.completion, with `X-Sovereign-Receipt` (the node's signed receipt) and
           Routstr's `X-Routstr-Cost-Msats` (and the prompt and completion parts per 1,000
           tokens), both also under the body's `sovereign`;
    streamed: no such headers (they would have to be sent before the answer is known): the
           receipt and the cost are in the last chunk's `sovereign`.

The answer stream is closed on any failure before the response takes it (an audit that raises,
an answer that fails whole): its reservation is given back and its engine slot freed.
"""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from apps.inference import api
from apps.inference.chat_request import ChatRequest
from apps.sharing import receipts, selling
from apps.sharing.models import Offer, Sale


async def sold_response(
    chat: ChatRequest, sold: selling.Sold, offer: Offer, audited: Callable[[], None]
) -> HttpResponseBase:
    """The response for a sold answer, once `audited` has recorded it."""
    try:
        await sync_to_async(audited)()
        if chat.stream:
            return _streamed(chat, sold)
        return await _whole(chat, sold, offer)
    except BaseException:
        await sold.events.aclose()
        raise


def _streamed(chat: ChatRequest, sold: selling.Sold) -> StreamingHttpResponse:
    answer = api.Answer(chat)
    response = StreamingHttpResponse(answer.sse(sold.events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _whole(chat: ChatRequest, sold: selling.Sold, offer: Offer) -> JsonResponse:
    whole = await api.Answer(chat).whole(sold.events)
    response = JsonResponse(whole)
    receipt = whole.get("sovereign", {}).get("receipt")
    if receipt is not None:
        response[receipts.HEADER] = receipts.receipt_header(receipt)
    if sold.sale is not None:
        for name, value in cost_headers(offer, sold.sale).items():
            response[name] = value
    return response


def cost_headers(offer: Offer, sale: Sale) -> dict[str, str]:
    """Routstr's cost headers (msat); per 1,000 tokens, the part the prompt cost and the rest."""
    headers = {"X-Routstr-Cost-Msats": str(sale.cost_msat)}
    if offer.per_1k_tokens:
        prompt = min(selling.cost_msat(offer, sale.prompt_tokens, 0), sale.cost_msat)
        headers["X-Routstr-Input-Cost-Msats"] = str(prompt)
        headers["X-Routstr-Output-Cost-Msats"] = str(sale.cost_msat - prompt)
    return headers
