"""The local engine as a ChatBackend: typed events from the real engine and the SmolLM2 file."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync

from apps.inference.backends.base import (
    AnswerEvent,
    AnswerRefused,
    BackendRequest,
    Done,
    RefusalCode,
    Token,
)
from apps.inference.backends.engine import LocalEngine, socket_path
from apps.inference.services import bundled_model_file
from tests.inference.conftest import RecordingDecoder

SAMPLING = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": [],
            "grammar": None}  # fmt: skip


def request(content: str, **options: Any) -> BackendRequest:
    model = bundled_model_file()
    assert model is not None
    messages = [{"role": "user", "content": content}]
    return BackendRequest(str(model), messages, SAMPLING, user="1", options=options)


def answered(asked: BackendRequest) -> list[AnswerEvent]:
    async def read() -> list[AnswerEvent]:
        return [event async for event in await LocalEngine().open(asked)]

    return async_to_sync(read)()


# First in the module: the engine fixture starts with the first test that asks for it.
def test_with_no_engine_running_the_request_is_refused_as_stopped(settings: Any) -> None:
    assert not socket_path().exists()

    with pytest.raises(AnswerRefused) as refused:
        answered(request("Hello?"))

    assert refused.value.code == RefusalCode.ENGINE_STOPPED
    assert refused.value.status == 503


def test_the_engine_answers_with_tokens_then_the_end_and_its_usage(
    engine: RecordingDecoder,
) -> None:
    events = answered(request("Say hello."))

    assert events and all(isinstance(event, Token) for event in events[:-1])
    end = events[-1]
    assert isinstance(end, Done) and end.finish_reason in ("stop", "length")
    assert end.usage.completion_tokens >= len(events) - 1
    assert end.usage.prompt_tokens > 0


def test_a_prompt_too_long_is_refused_before_any_token(engine: RecordingDecoder) -> None:
    with pytest.raises(AnswerRefused) as refused:
        answered(request("word " * 5000))

    assert refused.value.code == RefusalCode.CONTEXT_LENGTH_EXCEEDED
    assert refused.value.status == 400
