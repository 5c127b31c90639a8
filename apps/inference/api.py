"""The OpenAI-compatible API under /v1: the models, and chat completions (streamed or not)."""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from apps.identity.access import api_models_user
from apps.identity.models import Member
from apps.identity.nip98 import AuthRefused
from apps.inference import pipeline
from apps.inference.answering import Sampling, answer_collected
from apps.inference.backends.base import AnswerRefused, Done, Events, Failed, RefusalCode, Token
from apps.inference.chat_request import ChatRequest, OpenAIError, parse_chat_request, read_body
from apps.sharing import (
    routstr_views,
    stranger,  # strangers paying per request (L402, MPP)
)

logger = logging.getLogger(__name__)
View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def openai_errors(view: View) -> View:
    """Every answer under /v1 in OpenAI's shape, an unforeseen failure too (a 500 that says
    only that, with nothing of the request in the log)."""

    @functools.wraps(view)
    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return await view(request, *args, **kwargs)
        except OpenAIError as error:
            # A friend's quota says when it resets; a busy engine, to try again soon.
            retry = error.retry_after or 2
            headers = {"Retry-After": str(retry)} if error.status == 429 else None
            return error.response(headers)
        except Exception as error:
            logger.error("%s %s failed: %s", request.method, request.path, type(error).__name__)
            return OpenAIError(
                "The node failed to answer this request.", status=500, kind="server_error"
            ).response()

    return csrf_exempt(wrapped)  # programs authenticate with a key or a signature, not a cookie


def _allow(request: HttpRequest, method: str) -> None:
    if request.method != method:
        message = f"Use {method} for {request.path}."
        raise OpenAIError(message, status=405, code="method_not_allowed")


async def _authenticate(request: HttpRequest) -> Member:
    try:
        return await sync_to_async(api_models_user)(request)
    except AuthRefused as refusal:  # 401, or 403 for a friend: nothing is shared with them
        raise OpenAIError(str(refusal), status=refusal.status, code=refusal.code) from None


@openai_errors
async def unknown(request: HttpRequest, path: str = "") -> HttpResponse:
    raise OpenAIError(
        f"Invalid URL ({request.method} {request.path}).", status=404, code="unknown_url"
    )


@openai_errors
async def models_list(request: HttpRequest) -> HttpResponse:
    _allow(request, "GET")
    if not request.headers.get("Authorization") and await sync_to_async(stranger.is_stranger)(
        request
    ):
        return await sync_to_async(stranger.models_on_sale)()
    member = await _authenticate(request)
    max_tokens = settings.ENGINE_DEFAULT_MAX_TOKENS
    choices = await sync_to_async(pipeline.choices_for)(member, max_tokens)
    return JsonResponse({"object": "list", "data": [_model_entry(c, max_tokens) for c in choices]})


def _model_entry(choice: pipeline.ModelChoice, max_tokens: int) -> dict[str, Any]:
    """OpenAI's model entry; an outside model's price (for an answer of the default length)
    under `sovereign`, which OpenAI's clients ignore."""
    entry = {
        "id": choice.name,
        "object": "model",
        "created": int(choice.added_at.timestamp()),
        "owned_by": choice.owned_by,
    }
    if choice.outside:
        entry["sovereign"] = {"price_msat": choice.price_msat, "for_max_tokens": max_tokens}
    return entry


@openai_errors
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    _allow(request, "POST")
    if (key := routstr_views.bearer_key(request)) is not None:  # a Routstr key: a stranger's
        return await routstr_views.key_chat(request, key)
    if await sync_to_async(stranger.is_stranger)(request):
        sold = await stranger.chat_completions(request)  # None: that model is not on sale
        if sold is not None:
            return sold
    body = read_body(request)  # refused by its size before anything reads it
    member = await _authenticate(request)
    chat = parse_chat_request(body)
    events = await _start(member, chat)
    answer = Answer(chat)
    if chat.stream:
        response = StreamingHttpResponse(answer.sse(events), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return JsonResponse(await answer.whole(events))


def chat_sampling(chat: ChatRequest) -> Sampling:
    return Sampling(
        max_tokens=chat.max_tokens or settings.ENGINE_DEFAULT_MAX_TOKENS,
        temperature=chat.temperature,
        top_p=chat.top_p,
        # Drawn when the client sent none, and recorded: the same answer can be had again.
        seed=secrets.randbelow(2**31) if chat.seed is None else chat.seed,
        stop=chat.stop,
        grammar=chat.grammar,
        response_format=chat.response_format,
    )


async def _start(member: Member, chat: ChatRequest) -> Events:
    """Open the answer once its model has taken the request: refusals come before any 200."""
    sampling = chat_sampling(chat)
    asked = pipeline.AnswerRequest(member, pipeline.Origin.API, chat.model, chat.messages, sampling)
    try:
        return await pipeline.answer(asked)
    except AnswerRefused as refusal:
        raise refusal_error(refusal) from None


PARAM_AT_FAULT = {
    RefusalCode.CONTEXT_LENGTH_EXCEEDED: "messages",
    RefusalCode.MODEL_NOT_FOUND: "model",
}


def refusal_error(refusal: AnswerRefused | Failed) -> OpenAIError:
    """A refusal as OpenAI would answer it."""
    code = refusal.code
    status = code.status
    if status == 429:
        kind = "rate_limit_error"
    elif status == 402:
        kind = "insufficient_quota"
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    param = PARAM_AT_FAULT.get(code)
    message = refusal.message if isinstance(refusal, Failed) else str(refusal)
    retry_after = refusal.retry_after if isinstance(refusal, AnswerRefused) else None
    return OpenAIError(
        message, status=status, param=param, code=str(code), kind=kind, retry_after=retry_after
    )


class Answer:
    """Shapes an answer's events into OpenAI's chat.completion (chunks)."""

    def __init__(self, chat: ChatRequest) -> None:
        self.chat = chat
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        # A token's chunk is this answer's constant bytes around the text's JSON string: the
        # envelope is encoded once, not once a token. Content is the chunk's last string.
        self.token_head, _, self.token_tail = self._chunk({"content": ""}, None).rpartition(b'""')

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.chat.model}

    @staticmethod
    def _usage(done: Done) -> dict[str, Any]:
        """OpenAI's usage, with the prompt tokens found in the engine's cache where OpenAI
        reports those of its own prompt cache."""
        prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
        cached = {"cached_tokens": done.usage.cached_tokens}
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "prompt_tokens_details": cached}  # fmt: skip

    async def whole(self, events: Events) -> dict[str, Any]:
        text, event = await answer_collected(events)
        if isinstance(event, Failed):
            raise refusal_error(event)
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": event.finish_reason}  # fmt: skip
        return {**self._envelope("chat.completion"), "choices": [choice],
                "usage": self._usage(event),
                "sovereign": dict(event.provenance)}  # fmt: skip

    async def sse(self, events: Events) -> AsyncIterator[bytes]:
        try:
            yield self._chunk({"role": "assistant", "content": ""}, None)
            async for event in events:
                if isinstance(event, Token):
                    yield self.token_head + json.dumps(event.text).encode() + self.token_tail
                    continue
                if isinstance(event, Failed):
                    error = refusal_error(event)
                    body = {"message": str(error), "type": error.kind, "param": None,
                            "code": error.code}  # fmt: skip
                    yield _data({"error": body})
                    return
                yield self._end(event)
                break
            yield b"data: [DONE]\n\n"
        finally:
            await events.aclose()  # a client that left stops the generation at once

    def _end(self, done: Done) -> bytes:
        last = self._chunk({}, done.finish_reason, sovereign=dict(done.provenance))
        if self.chat.include_usage:
            last += _data({**self._envelope("chat.completion.chunk"), "choices": [],
                           "usage": self._usage(done)})  # fmt: skip
        return last

    def _chunk(self, delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _data({**self._envelope("chat.completion.chunk"), "choices": [choice], **extra})


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
