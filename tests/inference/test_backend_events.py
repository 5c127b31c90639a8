"""Events from a backend's wire format, typed at the boundary (apps/inference/backends/base.py)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.inference.backends.base import (
    Done,
    Failed,
    RefusalCode,
    Token,
    Usage,
    event_from_wire,
)


def test_a_token_and_the_end_are_typed_with_their_usage() -> None:
    done = {"event": "done", "finish_reason": "length", "prompt_tokens": 12,
            "completion_tokens": 5, "cached_tokens": 8, "dropped_messages": 2}  # fmt: skip

    assert event_from_wire({"event": "token", "text": "Hi"}) == Token("Hi")
    assert event_from_wire(done) == Done("length", Usage(12, 5, 8), dropped_messages=2)


def test_an_engine_error_keeps_its_code_and_message() -> None:
    event = {"event": "error", "code": "overloaded", "message": "Busy."}

    assert event_from_wire(event) == Failed(RefusalCode.OVERLOADED, "Busy.")
    assert RefusalCode.OVERLOADED.status == 429


@pytest.mark.parametrize(
    "event",
    [
        {"event": "token", "text": 7},
        {"event": "done", "finish_reason": "stop"},
        {"event": "done", "finish_reason": "stop", "prompt_tokens": "x", "completion_tokens": 1},
        {"event": "error", "code": "no_such_code", "message": "?"},
        {"event": "surprise"},
        {},
    ],
)
def test_a_malformed_event_is_a_failure_not_a_crash(event: dict[str, Any]) -> None:
    typed = event_from_wire(event)

    assert isinstance(typed, Failed)
    assert typed.code == RefusalCode.ENGINE_BROKEN
