"""The hook where what is private is taken out of a request before it leaves, and put back
into the answer. The privacy issue fills it; today messages leave as they are, and the egress
record shows exactly that."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.inference.backends.base import Events

Message = dict[str, str]


@dataclass(frozen=True)
class Outbound:
    messages: list[Message]  # what leaves

    def restored(self, events: Events) -> Events:
        """The answer with what was taken out put back."""
        return events


def outbound(member: Any, messages: list[Message]) -> Outbound:
    return Outbound(messages)
