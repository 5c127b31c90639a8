"""A conversation's vault: each private value that was taken out of a request, and the
placeholder that went out in its place.

The same value gets the same placeholder in every turn of a conversation (`state()` is kept
with the conversation and `Vault.from_state` takes it up again), so a model that saw
`[EMAIL_1]` last turn still means the same address. A vault holds the household's secrets: its
`repr` names kinds and counts only, and its state is never logged and never leaves the node.

Each request builds its own vault; nothing here is shared between vaults (no module-level
mutable state), so concurrent conversations cannot see each other's values. A vault belongs to
one request at a time: it is not meant to be written from two threads at once.

A value is matched exactly: `Ana@x.org` and `ana@x.org` are two values with two placeholders
(each restores as it was written). Detectors that match loosely (the household's terms) hand
over the text as it appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

KIND_LENGTH = 32  # a kind's part of a placeholder, at most
MAX_VALUES = 99_999  # per conversation: the counter stays within NUMBER_DIGITS
NUMBER_DIGITS = 5
FALLBACK_KIND = "PRIVATE"
STATE_VERSION = 1

_NOT_LABEL = re.compile(r"[^A-Z0-9]+")
_LABEL = re.compile(r"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)_([1-9][0-9]*)")


class Finding(Protocol):
    """What a detector found in a text: `text[start:end]`, of a kind (`email`, `phone`…).
    Any object with these attributes will do (a frozen dataclass, a NamedTuple)."""

    @property
    def kind(self) -> str: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...

    @property
    def value(self) -> str: ...


class VaultFull(Exception):
    """A conversation has more private values than placeholders can number: the request must
    not leave (sending the value as it is would leak it)."""


class VaultStateInvalid(ValueError):
    """A kept state that is not one `Vault.state()` wrote."""


def kind_label(kind: str) -> str:
    """A detector's kind as placeholders spell it: upper case, letters, digits and `_`,
    starting with a letter, at most KIND_LENGTH long (`bitcoin-address` → `BITCOIN_ADDRESS`)."""
    label = _NOT_LABEL.sub("_", kind.upper()).strip("_")
    label = label[:KIND_LENGTH].rstrip("_")
    if not label or not label[0].isalpha() or not label.isascii():
        return FALLBACK_KIND
    return label


class Vault:
    def __init__(self) -> None:
        self._values: dict[str, str] = {}  # label (EMAIL_1) → value
        self._labels: dict[str, str] = {}  # value → label
        self._counters: dict[str, int] = {}  # kind label → last number given

    def __repr__(self) -> str:
        # Kinds and counts only: a vault printed in a traceback or a log must not leak.
        counts = ", ".join(f"{kind}: {count}" for kind, count in sorted(self._counters.items()))
        return f"<Vault {{{counts}}}>"

    def __len__(self) -> int:
        return len(self._values)

    def placeholder(self, kind: str, value: str) -> str:
        """The placeholder for a value, the one it already has if it was seen before (whatever
        kind it was found as then: one value never goes out under two names)."""
        label = self._labels.get(value)
        if label is None:
            label = self._added(kind_label(kind), value)
        return f"[{label}]"

    def _added(self, kind: str, value: str) -> str:
        if len(self._values) >= MAX_VALUES:
            raise VaultFull("This conversation holds too many private values to send it.")
        number = self._counters.get(kind, 0) + 1
        label = f"{kind}_{number}"
        self._counters[kind] = number
        self._values[label] = value
        self._labels[value] = label
        return label

    def value_of(self, label: str) -> str | None:
        """The value behind a placeholder's label as the vault wrote it (`EMAIL_1`)."""
        return self._values.get(label)

    def knows_kind(self, kind: str) -> bool:
        return kind in self._counters

    def redact(self, text: str, findings: Iterable[Finding]) -> str:
        """The text with each finding replaced by its placeholder. Findings may come from
        several detectors and overlap: overlapping ones become one span covering them all, of
        the kind of the earliest (the longest of those starting together), so no part of any
        finding leaves. A span is clamped to the text, and what it covers is what is redacted
        (the finding's `value` is the detector's word for it)."""
        pieces: list[str] = []
        done = 0
        for start, end, kind in _merged(_spans(text, findings)):
            pieces.append(text[done:start])
            pieces.append(self.placeholder(kind, text[start:end]))
            done = end
        pieces.append(text[done:])
        return "".join(pieces)

    def state(self) -> dict[str, Any]:
        """What a conversation keeps to give the same placeholders next turn (JSON-ready).
        It holds the values themselves: store it as the conversation's own, never log it."""
        return {
            "version": STATE_VERSION,
            "values": dict(self._values),
            "counters": dict(self._counters),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Vault:
        """A vault taken up again from `state()`; anything else is refused, never half-read."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise VaultStateInvalid("The vault's state is not one this version wrote.")
        values, counters = state.get("values"), state.get("counters")
        if not isinstance(values, Mapping) or not isinstance(counters, Mapping):
            raise VaultStateInvalid("The vault's state is not one this version wrote.")
        if len(values) > MAX_VALUES:
            raise VaultStateInvalid("The vault's state holds more values than a vault may.")
        vault = cls()
        for label, value in values.items():
            vault._taken_up(label, value)
        for kind, number in counters.items():
            vault._counted(kind, number)
        return vault

    def _taken_up(self, label: Any, value: Any) -> None:
        parsed = _LABEL.fullmatch(label) if isinstance(label, str) else None
        if parsed is None or not isinstance(value, str) or value in self._labels:
            raise VaultStateInvalid("The vault's state has a placeholder it cannot hold.")
        kind, number = parsed.group(1), int(parsed.group(2))
        self._values[label] = value
        self._labels[value] = label
        self._counters[kind] = max(self._counters.get(kind, 0), number)

    def _counted(self, kind: Any, number: Any) -> None:
        # A counter never goes back: a number once given is never given to another value.
        if not isinstance(kind, str) or kind_label(kind) != kind or type(number) is not int:
            raise VaultStateInvalid("The vault's state has a counter it cannot hold.")
        if number >= 10**NUMBER_DIGITS or number < 0:
            raise VaultStateInvalid("The vault's state has a counter it cannot hold.")
        self._counters[kind] = max(self._counters.get(kind, 0), number)


def _spans(text: str, findings: Iterable[Finding]) -> list[tuple[int, int, str]]:
    """Findings as (start, end, kind) within the text, earliest first, longest first."""
    spans = []
    for finding in findings:
        start, end = max(finding.start, 0), min(finding.end, len(text))
        if start < end:
            spans.append((start, end, finding.kind))
    spans.sort(key=lambda span: (span[0], -span[1]))
    return spans


def _merged(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in spans:
        if merged and start < merged[-1][1]:
            first_start, first_end, first_kind = merged[-1]
            merged[-1] = (first_start, max(first_end, end), first_kind)
        else:
            merged.append((start, end, kind))
    return merged
