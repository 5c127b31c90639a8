"""One answer from the local engine, for every caller (the /v1 API and the dashboard's chat).

`open_answer` returns once the engine has taken the request, so a refusal (queue full, prompt
too long, engine down) comes before anything is sent to the caller: it raises `AnswerRefused`.
The events are typed (backends/base.py): `Token`s, then `Done` or `Failed`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from apps.inference.backends.base import (
    BackendRequest,
    Done,
    Events,
    Failed,
    RefusalCode,
    Token,
)
from apps.inference.backends.engine import LocalEngine
from apps.inference.context_fit import Overflow
from apps.inference.models import LocalModel


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
) -> Events:
    """The answer's events, once the engine has taken the request."""
    request = BackendRequest(
        str(model.path), messages, asdict(sampling), user, options={"overflow": overflow}
    )
    return await LocalEngine().open(request)


async def answer_collected(events: Events) -> tuple[str, Done | Failed]:
    """An answer's whole text and how it ended."""
    parts: list[str] = []
    try:
        async for event in events:
            if not isinstance(event, Token):
                return "".join(parts), event
            parts.append(event.text)
    finally:
        await events.aclose()
    return "".join(parts), Failed(RefusalCode.ENGINE_STOPPED, "The answer ended early.")
