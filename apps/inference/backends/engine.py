"""Talking to the engine process over its unix socket (see apps/inference/engine.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.inference.backends.base import (
    PRIMING,
    AnswerEvent,
    AnswerRefused,
    BackendRequest,
    ChatBackend,
    Events,
    Failed,
    RefusalCode,
    Token,
    event_from_wire,
    primed,
)
from apps.inference.engine_protocol import ENDS, Event, LineReader, tokens_merged

LINE_LIMIT = 1 << 22  # bytes in one event line
STOPPED: Event = {"event": "error", "code": "engine_stopped",
                  "message": "The model engine stopped while answering; try again."}  # fmt: skip


class EngineUnavailable(Exception):
    """The engine process is not answering (not started yet, or restarting)."""


def socket_path() -> Path:
    return Path(settings.DATA_DIR) / "engine.sock"


async def chat_events(
    model_path: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    *,
    user: str,
    overflow: str = "refuse",
    cache_group: str = "",
) -> AsyncGenerator[dict[str, Any], None]:
    """The engine's events for one chat: `token`s, then `done`, or an `error`.

    `overflow` says what the engine does with a prompt longer than its context: "refuse", or
    "drop_oldest" (the messages it left out are counted in `done`'s `dropped_messages`).
    Tokens that arrived together come as one token with their text: the caller writes once
    for all of them. Closing the iterator early closes the connection, which cancels the
    generation.
    """
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket_path()), limit=LINE_LIMIT)
    except OSError:
        raise EngineUnavailable("The model engine is not running; it restarts by itself.") from None
    request = {"op": "chat", "id": uuid.uuid4().hex, "model_path": model_path,
               "messages": messages, "params": params, "user": user,
               "overflow": overflow, "cache_group": cache_group}  # fmt: skip
    try:
        writer.write(json.dumps(request, ensure_ascii=False).encode() + b"\n")
        await writer.drain()
        lines = LineReader(LINE_LIMIT)
        # Everything received so far at each read, not a line at a time.
        while received := await reader.read(LINE_LIMIT):
            for event in tokens_merged(lines.feed(received)):
                yield event
                if event["event"] in ENDS:
                    return
        yield dict(STOPPED)
    except ConnectionError:
        yield dict(STOPPED)
    finally:
        writer.close()


def engine_status(timeout: float = 1.0) -> dict[str, Any] | None:
    """What the engine holds and how busy it is; None when it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(timeout)
            connection.connect(str(socket_path()))
            connection.sendall(b'{"op": "status"}\n')
            status: dict[str, Any] = json.loads(connection.makefile().readline())
            return status
    except (OSError, ValueError):
        return None


class LocalEngine(ChatBackend):
    """The engine process on this node, as one backend among the providers'. Its option
    `overflow` says what to do with a prompt longer than the context (see chat_events)."""

    async def open(self, request: BackendRequest) -> Events:
        """Typed events; a refusal before the first token raises AnswerRefused."""
        events = chat_events(
            request.model, request.messages, dict(request.sampling),
            user=request.user, overflow=str(request.options.get("overflow", "refuse")),
            cache_group=str(request.options.get("cache_group", "")),
        )  # fmt: skip
        try:
            first = event_from_wire(await anext(events))
        except EngineUnavailable as error:
            await events.aclose()
            raise AnswerRefused(RefusalCode.ENGINE_STOPPED, str(error)) from None
        if isinstance(first, Failed):
            await events.aclose()
            raise AnswerRefused(first.code, first.message)
        return await primed(_typed(first, events))


async def _typed(first: AnswerEvent, events: AsyncGenerator[dict[str, Any], None]) -> Events:
    try:
        yield PRIMING
        yield first
        if not isinstance(first, Token):
            return
        async for event in events:
            typed = event_from_wire(event)
            yield typed
            if not isinstance(typed, Token):
                return
    finally:
        await events.aclose()  # early close cancels the generation
