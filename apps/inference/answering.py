"""One answer from the local engine, for every caller (the /v1 API and the dashboard's chat).

`open_answer` reads the engine's first event before returning, so a refusal (queue full, prompt
too long, engine down) comes before anything is sent to the caller; it raises `AnswerRefused`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass
from typing import Any

from apps.inference.backends.engine import EngineUnavailable, chat_events
from apps.inference.context_fit import Overflow
from apps.inference.models import LocalModel

Events = AsyncGenerator[dict[str, Any], None]


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF; recorded as whether one constrained the answer

    def shown(self) -> dict[str, Any]:
        """The parameters as recorded with the answer and returned to the caller."""
        shown = asdict(self)
        shown["stop"] = list(self.stop)
        shown["grammar"] = self.grammar is not None
        return shown


# How each of the engine's refusals is answered over HTTP; anything else is the engine's fault.
REFUSAL_STATUS = {"context_length_exceeded": 400, "bad_request": 400, "overloaded": 429,
                  "engine_stopped": 503, "engine_broken": 503,
                  "model_unavailable": 503}  # fmt: skip


class AnswerRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def status(self) -> int:
        return REFUSAL_STATUS.get(self.code, 503)


def provenance(model: LocalModel, sampling: Sampling) -> dict[str, Any]:
    """Which file answered, and how: clients may ignore it, the owner can check it."""
    return {"model": model.name, "model_sha256": model.sha256, "sampling": sampling.shown()}


async def open_answer(
    model: LocalModel,
    messages: list[dict[str, str]],
    sampling: Sampling,
    *,
    user: str,
    overflow: Overflow = Overflow.REFUSE,
) -> tuple[dict[str, Any], Events]:
    """The engine's first event (a token or `done`) and the rest of its events."""
    params = asdict(sampling)
    events = chat_events(str(model.path), messages, params, user=user, overflow=overflow)
    try:
        first = await anext(events)
    except EngineUnavailable as error:
        raise AnswerRefused("engine_stopped", str(error)) from None
    if first["event"] == "error":
        await events.aclose()
        raise AnswerRefused(first["code"], first["message"])
    return first, events


async def answer_collected(first: dict[str, Any], events: Events) -> tuple[str, dict[str, Any]]:
    """An answer's whole text and its last event (`done`, or an `error`)."""
    parts, event = [], first
    try:
        while event["event"] == "token":
            parts.append(event["text"])
            event = await anext(events)
    finally:
        await events.aclose()
    return "".join(parts), event
