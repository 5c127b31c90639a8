"""What answers a chat, whoever it is: the local engine, or an outside provider (issue 14).

A backend streams typed events for one request: `Token`s, then `Done`, or `Failed`. A request
it refuses before any token raises `AnswerRefused` with a code from `RefusalCode`, so each
caller (the chat, /v1, agents) maps one closed set of codes to its own wire format.

The local engine is one backend (backends/engine.py); outside providers are another
(apps/providers/backends/chat.py), whatever their kind.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any


class RefusalCode(enum.StrEnum):
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    BAD_REQUEST = "bad_request"
    OVERLOADED = "overloaded"
    ENGINE_STOPPED = "engine_stopped"
    ENGINE_BROKEN = "engine_broken"
    MODEL_UNAVAILABLE = "model_unavailable"
    MODEL_NOT_FOUND = "model_not_found"
    PROVIDER_FAILED = "provider_failed"  # garbage, an error, a stream cut midway
    PROVIDER_TIMEOUT = "provider_timeout"
    INVOICE_REFUSED = "invoice_refused"  # above the price shown, no amount, not its own
    OVER_BUDGET = "over_budget"  # a budget or the member's allowance: nothing was paid
    PAYMENT_PENDING = "payment_pending"  # the outcome is unknown; it is not paid again
    WALLET_UNAVAILABLE = "wallet_unavailable"  # the household's Lightning node is not answering
    SECRET_IN_REQUEST = "secret_in_request"  # noqa: S105 - a seed phrase, a key: never sent
    PREVIEW_CHANGED = "preview_changed"  # what would leave is not what the member was shown
    MODEL_NOT_SHARED = "model_not_shared"  # a friend asked for a model not shared with them
    QUOTA_EXCEEDED = "quota_exceeded"  # a friend's daily quota is used up until it resets

    @property
    def status(self) -> int:
        """The HTTP status each refusal is answered with."""
        return _STATUS[self]


_STATUS = {
    RefusalCode.CONTEXT_LENGTH_EXCEEDED: 400,
    RefusalCode.BAD_REQUEST: 400,
    RefusalCode.OVERLOADED: 429,
    RefusalCode.ENGINE_STOPPED: 503,
    RefusalCode.ENGINE_BROKEN: 503,
    RefusalCode.MODEL_UNAVAILABLE: 503,
    RefusalCode.MODEL_NOT_FOUND: 404,
    RefusalCode.PROVIDER_FAILED: 502,
    RefusalCode.PROVIDER_TIMEOUT: 504,
    RefusalCode.INVOICE_REFUSED: 502,
    RefusalCode.OVER_BUDGET: 402,
    RefusalCode.PAYMENT_PENDING: 503,
    RefusalCode.WALLET_UNAVAILABLE: 503,
    RefusalCode.SECRET_IN_REQUEST: 400,
    RefusalCode.PREVIEW_CHANGED: 409,
    RefusalCode.MODEL_NOT_SHARED: 403,
    RefusalCode.QUOTA_EXCEEDED: 429,
}


class AnswerRefused(Exception):
    def __init__(self, code: RefusalCode, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after  # seconds until asking again may succeed (a quota's reset)

    @property
    def status(self) -> int:
        return self.code.status


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt, read from a cache rather than anew


@dataclass(frozen=True)
class Done:
    finish_reason: str  # stop, length
    usage: Usage
    dropped_messages: int = 0  # the oldest messages left out to fit the context
    provenance: Mapping[str, Any] = field(default_factory=dict)  # who answered, how, at what cost


@dataclass(frozen=True)
class Failed:
    """The answer broke off after it had begun."""

    code: RefusalCode
    message: str


AnswerEvent = Token | Done | Failed
Events = AsyncGenerator[AnswerEvent, None]  # Tokens, then one Done or Failed

# An async generator closed before it started skips its `finally`: a wrapper that must always
# clean up (close what it wraps, write its records) yields PRIMING first, inside its `try`, and
# is handed out by `primed`, which takes that first event. Closed or dropped after that, its
# cleanup runs.
PRIMING = Token("")


async def primed(events: Events) -> Events:
    if await anext(events) is not PRIMING:
        raise RuntimeError("A primed stream must yield PRIMING first.")
    return events


@dataclass(frozen=True)
class BackendRequest:
    model: str  # the backend's own name for it (a file, or a provider's model id)
    messages: list[dict[str, str]]
    sampling: Mapping[str, Any]
    user: str  # whom the backend keeps apart from others (fair shares, caches)
    options: Mapping[str, Any] = field(default_factory=dict)


class ChatBackend(ABC):
    def prepare(self, request: BackendRequest) -> BackendRequest:
        """What the backend needs of the database before it opens, done in the thread and the
        trip the pipeline already makes there (most backends need nothing)."""
        return request

    @abstractmethod
    async def open(self, request: BackendRequest) -> Events:
        """The answer's events, once the backend has taken the request (it reads the first
        event before returning: a refusal raises AnswerRefused before anything is sent to the
        caller). Closing the iterator early cancels the answer."""


def event_from_wire(event: Mapping[str, Any]) -> AnswerEvent:
    """An event as a backend's wire format carries it (the engine's JSON lines), checked and
    typed at the boundary; anything malformed is a failure, never a crash of the caller."""
    kind = event.get("event")
    if kind == "token" and isinstance(event.get("text"), str):
        return Token(event["text"])
    if kind == "done":
        try:
            usage = Usage(
                prompt_tokens=int(event["prompt_tokens"]),
                completion_tokens=int(event["completion_tokens"]),
                cached_tokens=int(event.get("cached_tokens", 0)),
            )
            return Done(str(event["finish_reason"]), usage, int(event.get("dropped_messages", 0)))
        except (KeyError, TypeError, ValueError):
            pass
    if kind == "error":
        return Failed(_code(event.get("code")), str(event.get("message", "")))
    return Failed(RefusalCode.ENGINE_BROKEN, "The model engine sent an event it should not.")


def _code(value: Any) -> RefusalCode:
    try:
        return RefusalCode(value)
    except ValueError:
        return RefusalCode.ENGINE_BROKEN
