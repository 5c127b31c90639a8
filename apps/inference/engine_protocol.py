"""The engine socket's event lines, written once for both ends (the engine and the web server).

A chat's events are `token` (with `text`), then `done` (finish_reason, prompt_tokens,
completion_tokens and whatever else the engine reports) or `error` (code, message), one JSON
object a line. Both ends handle at once all the events that are already there: consecutive
tokens become one, so each batch costs one write and one read, not one per token. Nothing waits
for events that have not come yet, so merging never delays a stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

Event = dict[str, Any]
ENDS = ("done", "error")  # the events that end a chat
# The user every stranger's paid request is (apps/sharing): one user to the engine's fairness,
# and held to the slots strangers may use (SOVEREIGN_SHARING_STRANGER_SLOTS).
STRANGERS = "strangers"

# Compact and UTF-8 as is: the fewest bytes to write, read and parse a token.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def tokens_merged(events: Iterable[Event]) -> list[Event]:
    """The events in order, each run of consecutive tokens as one token with their text."""
    merged: list[Event] = []
    run: list[str] = []
    for event in events:
        if event["event"] == "token":
            run.append(event["text"])
            continue
        if run:
            merged.append({"event": "token", "text": "".join(run)})
            run = []
        merged.append(event)
    if run:
        merged.append({"event": "token", "text": "".join(run)})
    return merged


def lines_encoded(events: Iterable[Event]) -> bytes:
    return "".join(_encoder.encode(event) + "\n" for event in events).encode()


class LineReader:
    """Splits what arrives from the socket into events, keeping an incomplete last line for the
    next read. A line longer than `limit` bytes is refused (ValueError)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = b""

    def feed(self, data: bytes) -> list[Event]:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > self.limit:
            raise ValueError(f"An engine line is longer than {self.limit} bytes.")
        return [json.loads(line) for line in lines]
