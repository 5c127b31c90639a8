"""JSON answers (`response_format`) through an outside model: /v1 sends the provider OpenAI's
field, with a JSON schema's words redacted like the messages (a seed phrase in it stops the
request), and the answer comes back as valid JSON with the member's real values in it, even
values holding a quote or a backslash, streamed at every chunk size and whole.

The provider is the OpenAI-shaped double on loopback (the home-network kind: nothing is paid),
answering a fixed JSON text made of placeholders.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mnemonic import Mnemonic

from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import Failed, RefusalCode
from apps.privacy import policy, redaction
from apps.privacy.models import Egress
from tests.privacy.household import (
    EMAIL,
    MODEL,
    api_key,
    leaked,
    provider_double,
    v1_streamed,
    v1_text,
    v1_whole,
)
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db(transaction=True)

NAME = 'Annika "Anni" Berg'  # the member's name, a quote in it
QUOTED = 'O"Brien'  # the owner's words: a quote, and a backslash
SLASHED = "Mill\\Lane"
PRIVATE = (NAME, EMAIL, QUOTED, SLASHED)
PROMPT = f"I am {NAME}; write to {EMAIL}. The {QUOTED} family live on {SLASHED}. Answer in JSON."
REDACTED = (
    "I am [NAME_1]; write to [EMAIL_1]. The [TERM_1] family live on [TERM_2]. Answer in JSON."
)
ANSWERED = '{"to": "[EMAIL_1]", "note": "[NAME_1] said hi", "where": "[TERM_1] at [TERM_2]"}'
RESTORED = {"to": EMAIL, "note": f"{NAME} said hi", "where": f"{QUOTED} at {SLASHED}"}
JSON_OBJECT = {"type": "json_object"}


@pytest.fixture
def member_quoted(member: Any) -> Any:
    member.name = NAME
    member.save(update_fields=["name"])
    policy.terms_add([QUOTED, SLASHED], actor="test")
    return member


def schema_format(description: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"to": {"type": "string", "description": description}},
        "required": ["to"],
    }
    return {"type": "json_schema", "json_schema": {"name": "letter", "schema": schema}}


def test_a_json_answer_leaves_redacted_and_comes_back_valid_json_with_the_real_values(
    member_quoted: Any, outside: OpenAIShapedDouble
) -> None:
    outside.switches.update(answer_text=ANSWERED)

    status, completion = v1_whole(api_key(member_quoted), PROMPT, response_format=JSON_OBJECT)

    assert status == 200
    assert json.loads(completion["choices"][0]["message"]["content"]) == RESTORED
    [sent] = outside.requests
    assert sent["response_format"] == JSON_OBJECT
    assert sent["messages"] == [{"role": "user", "content": REDACTED}]
    assert leaked(sent, PRIVATE) == []
    assert json.loads(Egress.objects.get().body)["response_format"] == JSON_OBJECT


def test_a_streamed_json_answer_is_valid_json_at_every_chunk_size(
    member_quoted: Any, outside: OpenAIShapedDouble
) -> None:
    key = api_key(member_quoted)
    for size in range(1, 13):
        outside.switches.update(answer_text=ANSWERED, chunk_size=size)

        status, chunks = v1_streamed(key, PROMPT, response_format=JSON_OBJECT)

        assert status == 200
        assert json.loads(v1_text(chunks)) == RESTORED, size
    assert all(body["response_format"] == JSON_OBJECT for body in outside.requests)


def test_without_a_response_format_the_values_go_back_as_plain_text(
    member_quoted: Any, outside: OpenAIShapedDouble
) -> None:
    outside.switches.update(answer_text=ANSWERED, chunk_size=5)

    status, chunks = v1_streamed(api_key(member_quoted), PROMPT)

    assert status == 200
    assert f'"note": "{NAME} said hi"' in v1_text(chunks)  # prose: not escaped, not JSON
    assert "response_format" not in outside.requests[0]
    with pytest.raises(ValueError):
        json.loads(v1_text(chunks))


def test_a_json_schema_leaves_with_its_private_words_redacted(
    member_quoted: Any, outside: OpenAIShapedDouble
) -> None:
    outside.switches.update(answer_text='{"to": "[EMAIL_1]"}')
    asked = schema_format(f"Write to {EMAIL}, as {NAME} asked; not to the {QUOTED} family.")

    status, completion = v1_whole(api_key(member_quoted), PROMPT, response_format=asked)

    assert status == 200
    assert json.loads(completion["choices"][0]["message"]["content"]) == {"to": EMAIL}
    [sent] = outside.requests
    expected = schema_format("Write to [EMAIL_1], as [NAME_1] asked; not to the [TERM_1] family.")
    assert sent["response_format"] == expected  # the same values, the same placeholders
    assert leaked(sent, PRIVATE) == []
    # Counted with the prompt's: a name, an e-mail and a word twice each, one other word once.
    assert Egress.objects.get().found == {"email": 2, "name": 2, "term": 3}


def test_a_seed_phrase_in_the_schema_stops_the_request(
    member_quoted: Any, outside: OpenAIShapedDouble
) -> None:
    seed = Mnemonic("english").to_mnemonic(bytes(range(16)))
    asked = schema_format(f"Remember {seed}")

    for ask in (v1_whole, v1_streamed):
        status, answer = ask(api_key(member_quoted), "Hello", response_format=asked)
        refusal = answer if isinstance(answer, dict) else answer[0]
        assert status == 400 and refusal["error"]["code"] == "secret_in_request"
        assert "seed phrase" in refusal["error"]["message"]
        assert seed not in json.dumps(refusal)

    assert outside.requests == [] and not Egress.objects.exists()


def test_a_trusted_provider_gets_the_format_as_it_was_asked(member_quoted: Any) -> None:
    double = provider_double("home", trusted=True)
    asked = schema_format(f"Write to {EMAIL}")
    try:
        status, _ = v1_whole(
            api_key(member_quoted), PROMPT, model="home/strong-1", response_format=asked
        )
    finally:
        double.stop()

    assert status == 200
    assert double.requests[0]["response_format"] == asked
    assert double.requests[0]["messages"][0]["content"] == PROMPT


def test_a_bare_grammar_is_still_only_for_local_models(
    member_quoted: Any, outside: OpenAIShapedDouble
) -> None:
    sampling = Sampling(max_tokens=8, temperature=0.0, top_p=1.0, seed=1, grammar='root ::= "a"')
    messages = [{"role": "user", "content": "Hi"}]
    asked = pipeline.AnswerRequest(member_quoted, pipeline.Origin.AGENT, MODEL, messages, sampling)

    text, end = pipeline.answer_sync(asked)

    assert isinstance(end, Failed) and end.code == RefusalCode.BAD_REQUEST
    assert "only kept by local models" in end.message
    assert text == "" and outside.requests == []


def test_a_household_word_as_a_property_name_leaves_as_one_placeholder_throughout(
    member_quoted: Any,
) -> None:
    schema = {"type": "object", "properties": {QUOTED: {"type": "string"}}, "required": [QUOTED]}
    asked = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}

    leaving = redaction.outbound(
        [{"role": "user", "content": PROMPT}], trusted=False, response_format=asked
    )

    assert leaving.response_format is not None
    sent = leaving.response_format["json_schema"]["schema"]
    assert sent == {
        "type": "object",
        "properties": {"[TERM_1]": {"type": "string"}},
        "required": ["[TERM_1]"],
    }
    assert leaving.found == {"email": 1, "name": 1, "term": 4}
    assert asked["json_schema"]["schema"]["required"] == [QUOTED]  # the member's is unchanged
