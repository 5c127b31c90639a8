"""The chat's preview: before a question goes to an outside model, the member sees exactly what
would leave the node (the redacted text), then sends or cancels.

The preview reads the same request a turn sends (`Turn.from_request`), and the one pipeline
computes what would leave the same way an answer does (`pipeline.preview`): nothing is sent,
paid or recorded, and the conversation is left as it was (its vault is copied, not changed), so
the placeholders shown are those the turn then sends.
"""

from __future__ import annotations

from typing import TypedDict

from apps.identity.models import Member
from apps.inference import pipeline
from apps.inference.chat_turn import Turn
from apps.privacy.detectors import Kind

# What each kind of private value is called in "2 e-mail addresses, 1 phone number".
_NOUNS: dict[str, tuple[str, str]] = {
    Kind.EMAIL: ("e-mail address", "e-mail addresses"),
    Kind.PHONE: ("phone number", "phone numbers"),
    Kind.IBAN: ("IBAN", "IBANs"),
    Kind.CARD: ("card number", "card numbers"),
    Kind.IP: ("IP address", "IP addresses"),
    Kind.ADDRESS: ("postal address", "postal addresses"),
    Kind.BITCOIN: ("Bitcoin address", "Bitcoin addresses"),
    Kind.LIGHTNING: ("Lightning invoice", "Lightning invoices"),
    Kind.NOSTR: ("Nostr profile", "Nostr profiles"),
    Kind.API_KEY: ("API key or token", "API keys or tokens"),
    Kind.NAME: ("household name", "household names"),
    Kind.TERM: ("word from the household's list", "words from the household's list"),
}


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


def preview_asked(member: Member, body: bytes) -> PreviewShown:
    """What the turn this body asks for would send. Raises ChatError or OpenAIError on a bad
    request, AnswerRefused as the turn would be refused (a hard stop, a price, a budget)."""
    turn = Turn.from_request(member, body)
    shown = pipeline.preview(turn.request())
    messages = [Message(role=m["role"], content=m["content"]) for m in shown.messages]
    return PreviewShown(
        outside=shown.outside,
        provider=shown.provider,
        trusted=shown.trusted,
        messages=messages,
        found=shown.found,
        found_said=found_said(shown.found),
        digest=shown.digest,
    )


def found_said(found: dict[str, int]) -> str:
    """Kinds and counts in words, most first: "2 e-mail addresses, 1 phone number"."""
    ordered = sorted(found.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {_noun(kind, count)}" for kind, count in ordered)


def _noun(kind: str, count: int) -> str:
    one, many = _NOUNS.get(kind, (kind, kind))  # Kind is a StrEnum: "email" finds Kind.EMAIL
    return one if count == 1 else many
