"""Where what is private is taken out of a request before it leaves the node, and put back into
the answer. The one pipeline (apps/inference/pipeline.py) calls `outbound` for every outside
request, whatever asked it (the chat, /v1, agents), and restores the answer with `restored`.

- A hard stop (a seed phrase, an nsec, a private key, a live token's preimage) refuses the
  request, even to a trusted provider: it is never redacted-and-sent.
- For every provider the owner has not marked trusted, each private value the detectors find
  becomes a placeholder (`[EMAIL_1]`) kept in the request's vault, which stays on the node.
- What leaves, and the kinds and counts found (never the values), go to the egress record.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from apps.inference.backends.base import AnswerRefused, Events, RefusalCode
from apps.privacy.detectors import Kind, detect
from apps.privacy.hard_stops import hard_stops
from apps.privacy.policy import Policy, policy_now
from apps.privacy.restore import restored_events
from apps.privacy.vault import Vault, VaultFull
from apps.providers.credentials import live_token_preimages

Message = dict[str, str]

# The detectors take a few microseconds a character (tens on text made of digits): a request
# longer than this (about 100,000 tokens, beyond most models' context) is refused rather than
# sent unchecked or checked for seconds on the database's thread.
MAX_CHECKED_CHARS = 400_000

# A preimage is 64 hex digits: the live tokens' preimages are read only when text has such a run.
_HEX_RUN = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Leaving:
    """What leaves the node for one outside request, and how to put back what was taken out."""

    messages: list[Message]  # exactly what is sent
    found: dict[str, int] = field(default_factory=dict)  # kind → count, never a value
    stop: tuple[str, ...] = ()  # the stop sequences, as sent
    vault: Vault | None = None  # None: nothing was redacted (a trusted provider)
    response_format: dict[str, Any] | None = None  # as sent: the answer is JSON text

    @property
    def redacted(self) -> bool:
        return self.vault is not None

    @property
    def digest(self) -> str:
        """What leaves, in 64 hex digits: the preview's, checked again when it is sent."""
        shown: dict[str, Any] = {
            "redacted": self.redacted,
            "messages": self.messages,
            "stop": list(self.stop),
        }
        if self.response_format is not None:
            shown["response_format"] = self.response_format
        encoded = json.dumps(shown, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(encoded).hexdigest()

    async def restored(self, events: Events) -> Events:
        """The answer with each placeholder put back, streamed. A JSON answer gets each value
        escaped as a JSON string's content (a quote in a name keeps the JSON valid)."""
        if self.vault is None:
            return events
        return await restored_events(
            events, self.vault, json_string=self.response_format is not None
        )


def outbound(
    messages: list[Message],
    *,
    trusted: bool,
    vault: Vault | None = None,
    policy: Policy | None = None,
    stop: tuple[str, ...] = (),
    response_format: dict[str, Any] | None = None,
    extra_terms: frozenset[str] = frozenset(),
) -> Leaving:
    """The messages, and the stop sequences and the response format's strings (a JSON
    schema's names and descriptions: the member's text too), as they may leave. `vault` is the
    conversation's (the same value keeps its placeholder across turns); a new one otherwise.
    `extra_terms` (names and places the local model found) are taken out as the household's
    words are. Raises AnswerRefused on a hard stop."""
    format_texts = strings_of(response_format)
    texts = [message["content"] for message in messages] + list(stop) + format_texts
    _bounded(texts)
    _stopped(texts)
    if trusted:
        return Leaving(list(messages), stop=stop, response_format=response_format)
    policy = _with_terms(policy or policy_now(), extra_terms)
    vault = vault if vault is not None else Vault()
    found: Counter[str] = Counter()
    redacted = []
    for text in texts:
        findings = detect(text, terms=policy.terms, enabled=policy.enabled)
        found.update(str(finding.kind) for finding in findings)
        try:
            redacted.append(vault.redact(text, findings) if findings else text)
        except VaultFull as full:
            raise AnswerRefused(RefusalCode.BAD_REQUEST, f"{full} Nothing was sent.") from None
    leaving = [
        {**message, "content": text} for message, text in zip(messages, redacted, strict=False)
    ]
    at_format = len(messages) + len(stop)
    stop_leaving = tuple(redacted[len(messages) : at_format])
    format_leaving = _strings_replaced(response_format, iter(redacted[at_format:]))
    found_sorted = dict(sorted(found.items()))
    return Leaving(leaving, found_sorted, stop_leaving, vault, format_leaving)


def strings_of(value: Any) -> list[str]:
    """Every string inside a JSON value, keys included, in order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings_of(item)]]
    if isinstance(value, list):
        return [text for item in value for text in strings_of(item)]
    return []


def _strings_replaced(value: Any, texts: Iterator[str]) -> Any:
    """The JSON value with its strings, keys included, taken in order from `texts` (as
    `strings_of` lists them): a key and the words of a schema go out redacted alike."""
    if isinstance(value, str):
        return next(texts)
    if isinstance(value, dict):
        return {next(texts): _strings_replaced(item, texts) for item in value.values()}
    if isinstance(value, list):
        return [_strings_replaced(item, texts) for item in value]
    return value


def _with_terms(policy: Policy, extra: frozenset[str]) -> Policy:
    """The policy, also taking out `extra` as words (Kind.TERM): the owner asked for them to
    be found, so they are taken out even with the household's list turned off."""
    if not extra:
        return policy
    words = policy.terms.words | extra if Kind.TERM in policy.enabled else extra
    terms = replace(policy.terms, words=words)
    return replace(policy, enabled=policy.enabled | {Kind.TERM}, terms=terms)


def _bounded(texts: list[str]) -> None:
    length = sum(len(text) for text in texts)
    if length > MAX_CHECKED_CHARS:
        raise AnswerRefused(
            RefusalCode.BAD_REQUEST,
            f"This request is too long to check for private values before it leaves "
            f"({length:,} characters; at most {MAX_CHECKED_CHARS:,}). Nothing was sent.",
        )
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): no text of any script
            raise AnswerRefused(
                RefusalCode.BAD_REQUEST,
                "The text holds a character that is not valid Unicode; nothing was sent.",
            ) from None


def _stopped(texts: list[str]) -> None:
    """Refuse the request if any text holds a secret that must never leave."""
    secrets: frozenset[str] | None = None
    for text in texts:
        if secrets is None and _HEX_RUN.search(text):
            secrets = live_token_preimages()
        stops = hard_stops(text, secrets=secrets or frozenset())
        if stops:
            raise AnswerRefused(RefusalCode.SECRET_IN_REQUEST, stops[0].message)
