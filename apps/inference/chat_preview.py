"""The chat's preview: before a question goes to an outside model, the member sees exactly what
would leave the node (the redacted text), then sends or cancels.

The preview reads the same request a turn sends (`Turn.from_request`), and the one pipeline
computes what would leave the same way an answer does (`pipeline.preview`): nothing is sent,
paid or recorded, and the conversation is left as it was (its vault is copied, not changed), so
the placeholders shown are those the turn then sends.

A cross-check's body (its `models`) is previewed too: for each of its outside models, what that
model's own request sends (built as the cross-check builds it, with no conversation's vault).
"""

from __future__ import annotations

from typing import Any, TypedDict

from apps.identity.models import Member
from apps.inference import chat_crosscheck, crosscheck, pipeline
from apps.inference.backends.base import AnswerRefused, RefusalCode
from apps.inference.chat_turn import Turn, json_object, refusal_text
from apps.privacy.shown import found_shown


class Message(TypedDict):
    role: str
    content: str


class PreviewShown(TypedDict):
    outside: bool  # false: a local model answers, nothing leaves
    provider: str
    trusted: bool  # the owner trusts the provider: sent as written
    messages: list[Message]  # exactly what would leave
    found: dict[str, int]  # kind → count, never a value
    found_said: str  # the same, as people read it: "2 e-mail addresses, 1 phone number"
    digest: str  # sent back with the question: it leaves as shown, or not at all


class ModelLeaving(TypedDict):
    """What goes to one outside model of a cross-check."""

    model: str
    provider: str  # "" when it is refused
    trusted: bool
    messages: list[Message]
    found: dict[str, int]
    found_said: str
    refused: str  # why nothing goes to it (its price over the allowance); "" when it is asked
    digest: str  # sent back with the cross-check: it leaves as shown, or not at all


class CrossCheckShown(TypedDict):
    outside: bool  # false: it asks only the node's own models, nothing to show
    leaving: list[ModelLeaving]  # each outside model, in the order ticked


def preview_asked(member: Member, body: bytes) -> PreviewShown | CrossCheckShown:
    """What the turn (or the cross-check: a body naming `models`) this body asks for would send.
    Raises ChatError or OpenAIError on a bad request, AnswerRefused as the turn would be
    refused (a hard stop, a price, a budget); a cross-check only on a hard stop."""
    data = json_object(body)
    if "models" in data:
        return _crosscheck_previewed(member, data)
    shown = pipeline.preview(Turn.from_data(member, data).request())
    return PreviewShown(
        outside=shown.outside,
        provider=shown.provider,
        trusted=shown.trusted,
        messages=_messages(shown),
        found=shown.found,
        found_said=found_said(shown.found),
        digest=shown.digest,
    )


def _crosscheck_previewed(member: Member, data: dict[str, Any]) -> CrossCheckShown:
    """Each outside model's own request, as the cross-check sends it. One that would be refused
    is asked all the same (its answer says why): it is shown refused, with nothing going to it.
    A hard stop stops the whole cross-check's preview: nothing may be sent as it stands."""
    asked = chat_crosscheck.crosscheck_read(member, data)
    leaving = []
    for model in asked.models:
        request = crosscheck.model_request(
            member,
            asked.messages,
            model,
            asked.sampling,
            pipeline.Origin.CHAT,
            private=asked.private,
        )
        try:
            shown = pipeline.preview(request)
        except AnswerRefused as refusal:
            if refusal.code == RefusalCode.SECRET_IN_REQUEST:
                raise
            leaving.append(_refused(model, refusal))
            continue
        if shown.outside:
            leaving.append(_model_leaving(model, shown))
    return CrossCheckShown(outside=bool(leaving), leaving=leaving)


def _model_leaving(model: str, shown: pipeline.Preview) -> ModelLeaving:
    return ModelLeaving(
        model=model,
        provider=shown.provider,
        trusted=shown.trusted,
        messages=_messages(shown),
        found=shown.found,
        found_said=found_said(shown.found),
        refused="",
        digest=shown.digest,
    )


def _refused(model: str, refusal: AnswerRefused) -> ModelLeaving:
    return ModelLeaving(
        model=model,
        provider="",
        trusted=False,
        messages=[],
        found={},
        found_said="",
        refused=refusal_text(refusal),
        digest="",
    )


def _messages(shown: pipeline.Preview) -> list[Message]:
    return [Message(role=m["role"], content=m["content"]) for m in shown.messages]


def found_said(found: dict[str, int]) -> str:
    """Kinds and counts in words, most first: "2 e-mail addresses, 1 phone number"."""
    return ", ".join(found_shown(found))
