"""Putting the private values back into an answer: whole texts, streams, JSON answers and
tool-call arguments.

What is restored (the grammar, case-insensitive):

    "[" up to 2 spaces · kind · separator · number · up to 2 spaces "]"

where the kind starts with a letter and goes on with letters, digits and separators, a
separator is `_`, `-` or a space (runs count as one), and the number has 1 to 6 digits. It is
read as the label `KIND_NUMBER` (upper case, separators `_`, leading zeros dropped) and looked
up in the vault: `[EMAIL_1]`, `[Email_1]`, `[email-1]`, `[EMAIL 1]`, `[ EMAIL_1 ]` and
`[EMAIL_01]` all restore the value of `[EMAIL_1]`. What stays as it is:

- a label the vault does not know. It is listed in `unknown` when it looks like one of ours:
  written exactly as the vault writes placeholders (`[IBAN_3]`), or of a kind the vault has
  given out (`[email 7]`); `[Step 1]` is ordinary text and not listed;
- a label without its brackets (`EMAIL_1`): it may be the model's own identifier, and
  restoring it could rewrite code or prose the model meant. It is left visible;
- other brackets (`(EMAIL_1)`, `{EMAIL_1}`), a kind without its separator (`[EMAIL1]`: is
  `[IPV41]` IPV4_1?) and a changed kind (`[MAIL_1]`): never guessed.

Why this is safe: the kind and the number are read whole, so a tolerated spelling can only
ever name the one placeholder it spells (`[EMAIL_11]` is never EMAIL_1), and only this
conversation's vault is asked. Restoring is one pass: a value that itself looks like a
placeholder is never restored again.

A placeholder is at most MAX_PLACEHOLDER_LENGTH characters long (longer spellings are text),
which bounds what a stream holds back whatever the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from apps.inference.backends.base import PRIMING, Done, Events, Token, primed
from apps.privacy.vault import KIND_LENGTH, NUMBER_DIGITS, Vault

# Room for separators a model adds inside a kind (`BITCOIN - ADDRESS`), and a leading zero.
_KIND_ROOM = KIND_LENGTH + 8
_NUMBER_ROOM = NUMBER_DIGITS + 1
_SPACES = 2
MAX_PLACEHOLDER_LENGTH = 1 + _SPACES + _KIND_ROOM + 1 + _NUMBER_ROOM + _SPACES + 1

# No lookbehind, and every match ends at its own "]": a text cut anywhere outside a match
# restores piece by piece exactly as it does whole, which the stream relies on.
_PLACEHOLDER = re.compile(
    rf"\[ {{0,{_SPACES}}}([A-Za-z][A-Za-z0-9_ -]{{0,{_KIND_ROOM - 1}}}?)"
    rf"[_ -]([0-9]{{1,{_NUMBER_ROOM}}}) {{0,{_SPACES}}}\]"
)
_AS_WRITTEN = re.compile(r"\[[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_[0-9]+\]")
_SEPARATORS = re.compile(r"[_ -]+")
# What could still grow into a placeholder: held back by a stream until it can tell.
_COULD_START = re.compile(rf"\[ {{0,{_SPACES}}}(?:[A-Za-z][A-Za-z0-9_ -]*)?")


@dataclass(frozen=True)
class Restored:
    text: str
    unknown: list[str] = field(default_factory=list)  # placeholders left visible, as written


@dataclass(frozen=True)
class RestoredJson:
    value: Any
    unknown: list[str] = field(default_factory=list)


class _Restorer:
    """One answer's restoring, gathering the unknown placeholders it leaves visible."""

    def __init__(self, vault: Vault, *, json_string: bool = False) -> None:
        self.vault = vault
        self.json_string = json_string  # values go into JSON text: escape them
        self.unknown: dict[str, None] = {}  # ordered, without repeats

    def text(self, text: str) -> str:
        if "[" not in text:
            return text
        return _PLACEHOLDER.sub(self._replacement, text)

    def _replacement(self, match: re.Match[str]) -> str:
        kind = _SEPARATORS.sub("_", match.group(1).strip(" _-")).upper()
        value = self.vault.value_of(f"{kind}_{int(match.group(2))}")
        if value is None:
            written = match.group(0)
            if _AS_WRITTEN.fullmatch(written) or self.vault.knows_kind(kind):
                self.unknown[written] = None
            return written
        if self.json_string:
            return json.dumps(value, ensure_ascii=False)[1:-1]
        return value

    def value(self, value: Any) -> Any:
        """Every string of a parsed JSON value restored, keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, Mapping):
            return {self.text(str(key)): self.value(item) for key, item in value.items()}
        return value


def restore(vault: Vault, text: str) -> Restored:
    """A whole answer with its placeholders replaced by the values behind them."""
    restorer = _Restorer(vault)
    restored = restorer.text(text)
    return Restored(restored, list(restorer.unknown))


def restore_json(vault: Vault, value: Any) -> RestoredJson:
    """A parsed JSON answer (`response_format`) restored inside every string, keys included."""
    restorer = _Restorer(vault)
    restored = restorer.value(value)
    return RestoredJson(restored, list(restorer.unknown))


def restore_arguments(vault: Vault, arguments: str) -> Restored:
    """A tool call's `arguments` (a JSON text): parsed, restored, written again, so a value
    with quotes or backslashes stays valid JSON. Arguments that do not parse are restored as
    text; arguments without a placeholder are returned exactly as they came."""
    if "[" not in arguments:
        return Restored(arguments)
    try:
        parsed = json.loads(arguments)
        restored = restore_json(vault, parsed)
    except (ValueError, RecursionError):
        return restore(vault, arguments)
    if restored.value == parsed:
        return Restored(arguments, restored.unknown)
    return Restored(json.dumps(restored.value, ensure_ascii=False), restored.unknown)


class StreamRestorer:
    """An answer restored as it streams. It holds back only the end of what came that could
    still grow into a placeholder: from its last `[`, and at most MAX_PLACEHOLDER_LENGTH - 1
    characters; everything before goes out at once. `json_string=True` is for a stream of JSON
    text (a JSON answer, tool-call arguments as they stream): values are escaped for a JSON
    string."""

    def __init__(self, vault: Vault, *, json_string: bool = False) -> None:
        self._restorer = _Restorer(vault, json_string=json_string)
        self._held = ""

    @property
    def unknown(self) -> list[str]:
        return list(self._restorer.unknown)

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        cut = _held_from(text)
        self._held = text[cut:]
        return self._restorer.text(text[:cut])

    def end(self) -> str:
        """What was held back, restored: the stream has ended."""
        text, self._held = self._held, ""
        return self._restorer.text(text)


def _held_from(text: str) -> int:
    start = text.rfind("[", max(len(text) - MAX_PLACEHOLDER_LENGTH + 1, 0))
    if start == -1 or not _COULD_START.fullmatch(text, start):
        return len(text)
    return start


async def restored_events(events: Events, vault: Vault, *, json_string: bool = False) -> Events:
    """The answer's events with the placeholders of its tokens restored. What a token's end
    held back goes out as a token before the answer's end (Done or Failed), and the unknown
    placeholders left visible are named in Done's provenance (never a value). `json_string`:
    the answer is JSON text (`response_format`), so each value is escaped for the string it
    stands in. It comes primed (PRIMING, backends/base.py): closed at any point, it closes the
    answer it wraps."""
    restorer = StreamRestorer(vault, json_string=json_string)
    return await primed(_restoring(events, restorer))


async def _restoring(events: Events, restorer: StreamRestorer) -> Events:
    try:
        yield PRIMING
        async for event in events:
            if isinstance(event, Token):
                text = restorer.feed(event.text)
                if text:
                    yield Token(text)
                continue
            held = restorer.end()
            if held:
                yield Token(held)
            if isinstance(event, Done) and restorer.unknown:
                provenance = {**event.provenance, "unknown_placeholders": restorer.unknown}
                event = replace(event, provenance=provenance)
            yield event
        held = restorer.end()  # a backend that stopped without an end: its text still counts
        if held:
            yield Token(held)
    finally:
        await events.aclose()
