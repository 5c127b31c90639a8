"""A JSON answer (`response_format`) from a local model, through /v1: the engine keeps it as a
GBNF grammar, as before outside models were sent the format itself. The real engine on the
bundled SmolLM2 file, in this process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.inference.models import LocalModel
from tests.inference.conftest import CONTEXT, MODEL, RecordingDecoder, bundled_local_model
from tests.privacy.household import api_key, v1_whole

SCHEMA = {
    "type": "object",
    "properties": {"sky_is_blue": {"type": "boolean"}},
    "required": ["sky_is_blue"],
}


@pytest.fixture
def local(transactional_db: None, engine: RecordingDecoder, settings: Any) -> LocalModel:
    settings.ENGINE_CONTEXT_PER_SLOT = CONTEXT
    return bundled_local_model()


def test_a_local_model_answers_a_json_schema_with_json_that_follows_it(
    local: LocalModel, member: Any
) -> None:
    asked = {"type": "json_schema", "json_schema": {"name": "sky", "schema": SCHEMA}}

    status, completion = v1_whole(
        api_key(member), "Is the sky blue?", model=MODEL, response_format=asked, max_tokens=40,
        temperature=0, seed=1,
    )  # fmt: skip

    assert status == 200, completion
    answer = json.loads(completion["choices"][0]["message"]["content"])
    assert set(answer) == {"sky_is_blue"} and isinstance(answer["sky_is_blue"], bool)
    assert completion["sovereign"]["sampling"]["grammar"] is True
    assert "response_format" not in completion["sovereign"]["sampling"]
