"""A cross-check in the chat: the last question asked of two to four models at once (local and
outside), their answers side by side with the local model's note on where they agree and differ.

The question and the conversation before it are those an answer made again would read (a Turn
that regenerates). Each outside model's price must be the one the page showed, as for a
question; the pipeline then checks the member's allowance before each request leaves. A
cross-check is not kept in the conversation: the page says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apps.identity.models import Member
from apps.inference import crosscheck, pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import Done
from apps.inference.chat_turn import Turn, json_object
from apps.inference.conversations import ChatError, Message
from apps.inference.markdown import render_markdown

FEWEST_MODELS, MOST_MODELS = crosscheck.FEWEST, crosscheck.MOST
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CrossCheckAsked:
    messages: list[Message]
    models: list[str]
    sampling: Sampling
    private: bool  # a private chat's: nothing of it is stored
    leaving_shown: dict[str, str]  # model → the preview's digest of what it would be sent


def crosscheck_asked(member: Member, body: bytes) -> CrossCheckAsked:
    """The request, checked: its models (each one the member may ask, at a price no higher than
    the page showed), and what they read: the conversation up to its last question."""
    return crosscheck_read(member, json_object(body))


def crosscheck_read(member: Member, data: dict[str, Any]) -> CrossCheckAsked:
    """As `crosscheck_asked`, from the body read (the preview reads the same one)."""
    models = _models(data.get("models"))
    if data.get("private") is not True and data.get("regenerate") is None:
        raise ChatError("Say which question to cross-check.")
    # The turn the cross-check asks again; what leaves for each model is its own (below).
    turn = Turn.from_data(member, {**data, "model": models[0], "leaving": None})
    _prices_checked(member, models, data.get("prices"), turn.sampling.max_tokens)
    return CrossCheckAsked(
        turn.messages(),
        models,
        turn.sampling,
        private=not turn.stored,
        leaving_shown=_leaving_shown(data.get("leaving"), models),
    )


def _leaving_shown(value: Any, models: list[str]) -> dict[str, str]:
    """What the preview showed each outside model would be sent (its digests), if it was."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        model in models and isinstance(digest, str) and _DIGEST.fullmatch(digest)
        for model, digest in value.items()
    ):
        raise ChatError("'leaving' must map the models asked to the digests the preview gave.")
    return dict(value)


def _models(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ChatError("Tick the models to ask.")
    if len(set(value)) != len(value) or not FEWEST_MODELS <= len(value) <= MOST_MODELS:
        raise ChatError(f"Tick {FEWEST_MODELS} to {MOST_MODELS} different models.")
    return list(value)


def _prices_checked(member: Member, models: list[str], shown: Any, max_tokens: int) -> None:
    """Nothing is asked if any outside model costs more than the page showed."""
    choices = {choice.name: choice for choice in pipeline.choices_for(member, max_tokens)}
    shown = shown if isinstance(shown, dict) else {}
    for name in models:
        choice = choices.get(name)
        if choice is None:
            raise ChatError(f"There is no model '{name}' to ask; reload the page.")
        seen = shown.get(name)
        if not choice.outside:
            continue
        if not isinstance(seen, int) or isinstance(seen, bool):
            raise ChatError(f"The price of {name} was not shown; reload the page.")
        if choice.price_msat > seen:
            raise ChatError(
                f"The price of {name} went up from {_sat(seen)} to {_sat(choice.price_msat)}; "
                "nothing was sent or paid. Ask again to accept the new price."
            )


def crosscheck_shown(result: crosscheck.CrossCheck) -> dict[str, Any]:
    """The answers and the note as the page shows them: Markdown rendered by the node's
    sanitising renderer (answers are untrusted), each answer naming who gave it."""
    answers = []
    for checked in result.answers:
        shown: dict[str, Any] = {"model": checked.model, "answered_by": checked.answered_by}
        end = checked.end
        if isinstance(end, Done):
            outside = checked.provider != "sovereign"
            shown["provider"] = checked.provider if outside else ""
            shown["cost_msat"] = end.provenance.get("cost_msat") if outside else None
            shown["finish_reason"] = end.finish_reason
            shown["html"] = render_markdown(checked.text)
        else:
            shown["error"] = end.message
        answers.append(shown)
    written = not result.note.startswith(crosscheck.NOT_WRITTEN.partition("{")[0])
    note = render_markdown(result.note) if written else ""
    return {"answers": answers, "note_html": note, "note_missing": "" if written else result.note}


def _sat(msat: int) -> str:
    return f"{msat / 1000:g} sat"
