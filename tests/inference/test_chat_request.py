"""Chat-completion requests checked at the edge: each malformed field refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.inference.chat_request import OpenAIError, parse_chat_request

VALID = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}]}


def parse(**changes: Any) -> Any:
    return parse_chat_request(json.dumps({**VALID, **changes}).encode())


def test_a_plain_request_gets_openais_defaults() -> None:
    request = parse()

    assert request.model == "smollm2-135m-instruct"
    assert request.messages == [{"role": "user", "content": "Hi"}]
    assert (request.stream, request.max_tokens, request.temperature, request.top_p) == (
        False, None, 1.0, 1.0,
    )  # fmt: skip
    assert (request.stop, request.seed, request.grammar) == ((), None, None)


def test_text_parts_are_joined_and_stop_may_be_one_string() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    request = parse(messages=[{"role": "user", "content": parts}], stop="\n", max_tokens=5)
    assert request.messages[0]["content"] == "Hello, world"
    assert request.stop == ("\n",)
    assert request.max_tokens == 5


def test_a_json_schema_becomes_a_grammar_that_requires_its_fields() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    request = parse(
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    )
    assert request.grammar is not None
    assert '"\\"answer\\""' in request.grammar
    assert parse(response_format={"type": "json_object"}).grammar is not None


def test_a_json_response_format_is_kept_as_sent_for_outside_models() -> None:
    asked = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}

    assert parse(response_format=asked).response_format == asked
    assert parse(response_format={"type": "json_object"}).response_format == {"type": "json_object"}
    assert parse(response_format={"type": "text"}).response_format is None
    assert parse().response_format is None


@pytest.mark.parametrize(
    ("changes", "param", "message"),
    [
        ({"model": None}, "model", "'model' is required"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0]", "needs a 'role'"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "must be a string"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
            "only have text parts",
        ),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"max_tokens": 0}, "max_tokens", "from 1 to"),
        ({"max_tokens": 2.5}, "max_tokens", "whole number"),
        ({"temperature": 3}, "temperature", "from 0 to 2"),
        ({"top_p": -0.1}, "top_p", "from 0 to 1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
        ({"stop": [""]}, "stop", "non-empty"),
        ({"seed": -1}, "seed", "from 0 to"),
        (
            {"response_format": {"type": "xml"}},
            "response_format",
            "text, json_object or json_schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format",
            "JSON schema object",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": "a"}},
            "response_format",
            "JSON schema object",
        ),
        (
            {"response_format": {"type": "json_object", "deep": json.loads("[" * 70 + "]" * 70)}},
            "response_format",
            "nested more than 64 levels",
        ),
    ],
)
def test_each_malformed_field_is_refused_by_name(
    changes: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(OpenAIError, match=message) as refusal:
        parse(**changes)
    assert refusal.value.param == param
    assert refusal.value.status == 400


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(OpenAIError) as refusal:
        parse_chat_request(body)
    error = json.loads(refusal.value.response().content)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", 3), ("n", True), ("tools", [{"type": "function"}]), ("logprobs", True),
     ("presence_penalty", 0.5), ("tool_choice", "auto"), ("mystery", 1)],
)  # fmt: skip
def test_a_field_that_would_change_the_answer_unseen_is_refused_by_name(
    field: str, value: Any
) -> None:
    with pytest.raises(OpenAIError) as refusal:
        parse(**{field: value})
    assert (refusal.value.param, refusal.value.code) == (field, "unsupported_parameter")


def test_fields_with_the_value_that_changes_nothing_are_accepted() -> None:
    request = parse(n=1, tools=[], logprobs=False, presence_penalty=0.0, user="x", n_ignored=None)
    assert request.model == "smollm2-135m-instruct"


def test_json_nested_too_deeply_is_refused_not_a_crash() -> None:
    with pytest.raises(OpenAIError, match="nested too deeply"):
        parse_chat_request(b"[" * 100_000 + b"]" * 100_000)
