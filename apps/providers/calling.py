"""The one place that sends a chat request to an outside provider and reads its answer.

`open_outside` posts the body with the kind's credentials; on a 402 the kind pays (once) and the
request is sent again; a second 402 ends it, unpaid. The answer is untrusted: its status, type,
size and shape are checked, and it becomes typed events (Token, then Done or Failed). Before the
first byte leaves, an egress record holds the exact body and its destination; when the request
ends, the provider's record says how it went and what it cost.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
from asgiref.sync import sync_to_async
from django.conf import settings

from apps.inference.backends.base import (
    PRIMING,
    AnswerEvent,
    AnswerRefused,
    Done,
    Events,
    Failed,
    RefusalCode,
    Token,
    Usage,
    primed,
)
from apps.providers import records
from apps.providers.backends.base import Authorization, Call, Kind, Outcome, Unanswered

REFUSAL_FOR = {
    Outcome.FAILED: RefusalCode.PROVIDER_FAILED,
    Outcome.TIMEOUT: RefusalCode.PROVIDER_TIMEOUT,
    Outcome.INVOICE_REFUSED: RefusalCode.INVOICE_REFUSED,
    Outcome.OVER_BUDGET: RefusalCode.OVER_BUDGET,
    Outcome.PAYMENT_PENDING: RefusalCode.PAYMENT_PENDING,
    Outcome.WALLET_UNAVAILABLE: RefusalCode.WALLET_UNAVAILABLE,
}
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _client() -> httpx2.AsyncClient:
    """One client (and its kept connections) per event loop: reusing a connection is most of
    what makes a request with a kept token cheap."""
    loop = asyncio.get_running_loop()
    if loop not in _clients:
        _clients[loop] = httpx2.AsyncClient(follow_redirects=False, trust_env=False)
    return _clients[loop]


async def client_close() -> None:
    """Close this event loop's client: a loop made for one answer (answer_sync) ends with it."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


@dataclass
class Exchange:
    """What one outside request did, for its records."""

    call: Call
    started: float = field(default_factory=time.monotonic)
    egress_id: int | None = None
    payment_purposes: list[str] = field(default_factory=list)  # paid for this request
    sent: bool = False  # the question left the node
    first_token_ms: int | None = None
    usage: Usage | None = None

    def paid(self, authorization: Authorization) -> None:
        purpose = authorization.payment_purpose
        if purpose and purpose not in self.payment_purposes:
            self.payment_purposes.append(purpose)

    def elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)


@dataclass(frozen=True)
class Prepared:
    """An outside request whose egress is recorded and whose kept credentials are read."""

    exchange: Exchange
    kind: Kind
    first: Authorization | None  # None: `kind.credentials` must do more (buy, wait)


def outside_prepared(call: Call, kind: Kind) -> Prepared:
    """What a request needs of the database before it is sent, in one trip there (the
    pipeline makes it with its own, in the same thread)."""
    exchange = Exchange(call)
    return Prepared(exchange, kind, _prepared(exchange, kind))


async def open_outside(call: Call, kind: Kind, prepared: Prepared | None = None) -> Events:
    """The provider's answer as events, once it has begun; a request that ends before any
    token (refused, unpaid, broken, silent) raises AnswerRefused and is recorded as such."""
    if prepared is None:
        prepared = await sync_to_async(outside_prepared)(call, kind)
    exchange = prepared.exchange
    try:
        response = await _answered(exchange, kind, prepared.first)
        await kind.on_answer(call, response)
        events = _events(exchange, response)
        first = await anext(events)
    except Unanswered as unanswered:
        await _record(exchange, unanswered.outcome, str(unanswered))
        raise AnswerRefused(REFUSAL_FOR[unanswered.outcome], str(unanswered)) from None
    except BaseException:  # the member left while it was being paid or asked
        await asyncio.shield(_record(exchange, Outcome.STOPPED, "Stopped before it began."))
        raise
    if isinstance(first, Failed):
        await events.aclose()
        await _record(exchange, _outcome_of(first), first.message)
        raise AnswerRefused(first.code, first.message)
    return await primed(_recorded(exchange, kind, first, events))


async def _answered(exchange: Exchange, kind: Kind, first: Authorization | None) -> httpx2.Response:
    """The provider's 200, paying once on a 402."""
    call = exchange.call
    if first is None:
        first = await kind.credentials(call)  # may buy a key first (a prepaid provider's)
    exchange.paid(first)
    exchange.sent = True
    response = await _send(call, first)
    if response.status_code == 402:
        await _body(response)
        paid = await kind.on_payment_required(call, response)
        exchange.paid(paid)
        response = await _send(call, paid)
        if response.status_code == 402:
            await response.aclose()
            raise Unanswered(
                Outcome.FAILED,
                "The provider asked to be paid again right after being paid; nothing more "
                "was paid for this request.",
            )
    if response.status_code != 200:
        detail = await _error_detail(response)
        await kind.on_refused(call, response)
        raise Unanswered(Outcome.FAILED, f"The provider answered {response.status_code}{detail}.")
    return response


def _prepared(exchange: Exchange, kind: Kind) -> Authorization | None:
    """The egress record, written before the question's first byte leaves (a crash mid-request
    keeps it; a request that ends before sending anything drops it), and the credentials when
    the database alone has them: one trip to the database thread."""
    exchange.egress_id = records.egress_begin(exchange.call)
    return kind.credentials_now(exchange.call)


async def _send(call: Call, authorization: Authorization) -> httpx2.Response:
    timeout = httpx2.Timeout(call.provider.timeout_seconds)
    request = _client().build_request(
        "POST",
        f"{call.provider.base_url}/v1/chat/completions",
        json=call.body,
        headers={**authorization.headers, "Accept": "text/event-stream"},
        timeout=timeout,
    )
    try:
        return await _client().send(request, stream=True)
    except httpx2.TimeoutException:
        raise Unanswered(Outcome.TIMEOUT, "The provider did not answer in time.") from None
    except httpx2.HTTPError as error:
        raise Unanswered(Outcome.FAILED, f"The provider cannot be reached ({error}).") from None


async def _body(response: httpx2.Response, limit: int = 1 << 16) -> bytes:
    """At most `limit` bytes of a short answer (a 402's challenge, an error)."""
    received = b""
    try:
        async for part in response.aiter_bytes():
            received += part
            if len(received) > limit:
                break
    except httpx2.HTTPError:
        pass
    finally:
        await response.aclose()
    response._content = received[:limit]  # so that .json() and .text read what was kept
    return received[:limit]


async def _error_detail(response: httpx2.Response) -> str:
    raw = await _body(response, 2000)
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {str(message)[:200]}"


def _events(exchange: Exchange, response: httpx2.Response) -> Events:
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    if kind == "text/event-stream":
        return _streamed(exchange, response)
    if kind == "application/json":
        return _whole(exchange, response)
    return _failed_at_once(response, f"The provider answered with {kind or 'no type'}, not JSON.")


async def _failed_at_once(response: httpx2.Response, message: str) -> Events:
    await response.aclose()
    yield Failed(RefusalCode.PROVIDER_FAILED, message)


async def _whole(exchange: Exchange, response: httpx2.Response) -> Events:
    try:
        raw = await _bounded(response)
        answer = json.loads(raw)
        choice = answer["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, IndexError):
        yield Failed(RefusalCode.PROVIDER_FAILED, "The provider's answer was not a chat answer.")
        return
    except _Broken as broken:
        yield broken.failed
        return
    exchange.first_token_ms = exchange.elapsed_ms()
    yield Token(text)
    yield Done(str(choice.get("finish_reason") or "stop"), _usage(answer.get("usage")))


class _Broken(Exception):
    def __init__(self, failed: Failed) -> None:
        self.failed = failed


async def _parts(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The answer's bytes as they come, counted: too large, broken off or silent, it ends in
    `_Broken` with what the member is told."""
    received = 0
    try:
        async for part in response.aiter_bytes():
            received += len(part)
            if received > settings.PROVIDER_ANSWER_BYTES:
                raise _Broken(
                    Failed(RefusalCode.PROVIDER_FAILED, "The provider's answer was too large.")
                )
            yield part
    except httpx2.TimeoutException:
        raise _Broken(
            Failed(RefusalCode.PROVIDER_TIMEOUT, "The provider stopped answering.")
        ) from None
    except httpx2.HTTPError:
        raise _Broken(
            Failed(RefusalCode.PROVIDER_FAILED, "The provider's answer broke off.")
        ) from None


async def _bounded(response: httpx2.Response) -> bytes:
    try:
        return b"".join([part async for part in _parts(response)])
    finally:
        await response.aclose()


async def _streamed(exchange: Exchange, response: httpx2.Response) -> Events:
    """Server-sent chunks as events; a stream that stops before its end is a failure."""
    finish: str | None = None
    usage: Usage | None = None
    try:
        async for payload in _sse_payloads(response):
            if payload == "[DONE]":
                break
            chunk = json.loads(payload)
            usage = _usage(chunk["usage"]) if chunk.get("usage") else usage
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if isinstance(text, str) and text:
                    if exchange.first_token_ms is None:
                        exchange.first_token_ms = exchange.elapsed_ms()
                    yield Token(text)
                finish = choice.get("finish_reason") or finish
    except _Broken as broken:
        yield broken.failed
        return
    except (ValueError, KeyError, TypeError, AttributeError):
        yield Failed(RefusalCode.PROVIDER_FAILED, "The provider's stream was not chat chunks.")
        return
    finally:
        await response.aclose()
    if finish is None:
        yield Failed(RefusalCode.PROVIDER_FAILED, "The provider's answer stopped midway.")
        return
    yield Done(finish, usage or Usage(0, 0))


async def _sse_payloads(response: httpx2.Response) -> AsyncIterator[str]:
    """The `data:` of each event line. Lines are split here, over bytes counted as they come:
    a provider sending megabytes with no line break is cut off, not held whole in memory."""
    pending = b""
    async for part in _parts(response):
        *lines, pending = (pending + part).split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip().decode("utf-8", "replace")
    if pending.startswith(b"data:"):
        yield pending[5:].strip().decode("utf-8", "replace")


MOST_TOKENS = 10**9  # more than any answer: a provider's bigger number is not believed


def _usage(value: Any) -> Usage:
    try:
        prompt, completion = int(value["prompt_tokens"]), int(value["completion_tokens"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return Usage(0, 0)
    return Usage(_believable(prompt), _believable(completion))


def _believable(tokens: int) -> int:
    return tokens if 0 <= tokens <= MOST_TOKENS else 0


async def _recorded(exchange: Exchange, kind: Kind, first: AnswerEvent, events: Events) -> Events:
    """The events, the end carrying who answered and what it cost; the request's records are
    written once the caller is done with the answer (or abandoned it), not before its end."""
    end: Done | Failed | None = None
    try:
        yield PRIMING
        event: AnswerEvent | None = first
        while isinstance(event, Token):
            yield event
            event = await anext(events, None)
        if event is None:
            event = Failed(RefusalCode.PROVIDER_FAILED, "The provider's answer stopped midway.")
        if isinstance(event, Done):
            exchange.usage = event.usage
            event = replace(event, provenance=await _provenance(exchange))
        end = event
        yield end
    finally:
        await events.aclose()
        await asyncio.shield(_ended(exchange, kind, end))


async def _provenance(exchange: Exchange) -> dict[str, Any]:
    """Who answered, and what this request paid (and the payment's hash: its proof)."""
    call = exchange.call
    cost, payment_hash = 0, ""
    if exchange.payment_purposes:
        cost, payment_hash = await sync_to_async(records.paid_for)(exchange.payment_purposes)
    return {
        "provider": call.provider.name,
        "model": f"{call.provider.name}/{call.model_id}",
        "request_id": call.request_id,
        "cost_msat": cost,
        "payment_hash": payment_hash,
    }


async def _ended(exchange: Exchange, kind: Kind, end: Done | Failed | None) -> None:
    if isinstance(end, Done):
        await kind.on_usage(exchange.call, end.usage.prompt_tokens, end.usage.completion_tokens)
        await _record(exchange, Outcome.ANSWERED, "")
    elif isinstance(end, Failed):
        await _record(exchange, _outcome_of(end), end.message)
    else:  # the member stopped it, or left
        await _record(exchange, Outcome.STOPPED, "Stopped before its end.")


def _outcome_of(failed: Failed) -> Outcome:
    return Outcome.TIMEOUT if failed.code == RefusalCode.PROVIDER_TIMEOUT else Outcome.FAILED


async def _record(exchange: Exchange, outcome: Outcome, error: str) -> None:
    await sync_to_async(records.request_record)(
        records.Ended(
            call=exchange.call,
            outcome=outcome,
            error=error,
            egress_id=exchange.egress_id,
            payment_purposes=tuple(exchange.payment_purposes),
            sent=exchange.sent,
            first_token_ms=exchange.first_token_ms,
            total_ms=exchange.elapsed_ms(),
            usage=exchange.usage,
        )
    )
