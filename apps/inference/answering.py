"""What every answer shares, whoever gives it: its sampling, its provenance, its whole text.

Answers are asked of the pipeline (pipeline.py), the one entry point for every caller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from apps.inference.backends.base import Done, Events, Failed, RefusalCode, Token
from apps.inference.models import LocalModel


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF; recorded as whether one constrained the answer
    # OpenAI's response_format the grammar came from: what an outside model is sent instead.
    response_format: dict[str, Any] | None = field(default=None, hash=False)

    def shown(self) -> dict[str, Any]:
        """The parameters as recorded with the answer and returned to the caller."""
        shown = self.for_engine()
        shown["stop"] = list(self.stop)
        shown["grammar"] = self.grammar is not None
        return shown

    def for_engine(self) -> dict[str, Any]:
        """The parameters the local engine samples with: the format as its grammar."""
        params = asdict(self)
        del params["response_format"]
        return params


def provenance(model: LocalModel, sampling: Sampling) -> dict[str, Any]:
    """Which file answered, and how: clients may ignore it, the owner can check it."""
    return {"model": model.name, "model_sha256": model.sha256, "sampling": sampling.shown()}


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
