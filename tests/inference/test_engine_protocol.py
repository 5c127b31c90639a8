"""The engine socket's lines: tokens already waiting travel as one, and nothing else changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from apps.inference.backends.engine import chat_events, socket_path
from apps.inference.engine_protocol import Event, LineReader, lines_encoded, tokens_merged

DONE = {"event": "done", "finish_reason": "length", "prompt_tokens": 7, "completion_tokens": 3,
        "cached_tokens": 5, "dropped_messages": 2}  # fmt: skip


def tokens(*texts: str) -> list[Event]:
    return [{"event": "token", "text": text} for text in texts]


def test_consecutive_tokens_become_one_with_their_text_in_order() -> None:
    events = [*tokens("Par", "is", " é"), DONE]

    assert tokens_merged(events) == [*tokens("Paris é"), DONE]


def test_an_error_between_tokens_is_kept_in_its_place() -> None:
    error = {"event": "error", "code": "engine_broken", "message": "No."}

    assert tokens_merged([*tokens("a", "b"), error, *tokens("c")]) == [
        *tokens("ab"),
        error,
        *tokens("c"),
    ]


def test_lines_read_back_whatever_way_the_bytes_are_cut() -> None:
    events = [*tokens("one\n", '"two"', "✓ \u2028"), DONE]
    encoded = lines_encoded(events)
    reader = LineReader(limit=1024)

    read = [
        event for cut in range(0, len(encoded), 5) for event in reader.feed(encoded[cut : cut + 5])
    ]

    assert read == events
    assert reader.pending == b""


def test_a_line_over_the_limit_is_refused() -> None:
    reader = LineReader(limit=16)

    with pytest.raises(ValueError, match="longer than 16 bytes"):
        reader.feed(b'{"event":"token","text":"' + b"x" * 32)


async def engine_double(lines: list[bytes]) -> asyncio.Server:
    """An engine that writes the given lines in one write to whoever asks, then hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"".join(lines))
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(answer, path=str(socket_path()))


def answer_read(lines: list[bytes]) -> list[dict[str, Any]]:
    async def scenario() -> list[dict[str, Any]]:
        async with await engine_double(lines):
            return [event async for event in chat_events("model.gguf", [], {}, user="1")]

    try:
        return asyncio.run(scenario())
    finally:
        socket_path().unlink(missing_ok=True)


def test_tokens_that_arrived_together_are_one_event_and_done_keeps_every_field() -> None:
    lines = lines_encoded([*tokens("The", " capital", " is", " Paris"), DONE])

    assert answer_read([lines]) == [*tokens("The capital is Paris"), DONE]


def test_events_after_done_are_not_read() -> None:
    lines = lines_encoded([*tokens("a"), DONE, *tokens("late")])

    assert answer_read([lines]) == [*tokens("a"), DONE]


def test_an_engine_that_closes_mid_answer_gives_engine_stopped() -> None:
    lines = lines_encoded(tokens("a", "b"))

    events = answer_read([lines, b'{"event":"tok'])

    assert events[0] == tokens("ab")[0]
    assert events[1]["code"] == "engine_stopped"
