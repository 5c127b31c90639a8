"""Redact → a provider answering with the placeholders → restore, through the real pipeline and
a real HTTP provider double, streamed and whole: the member reads their own values.

The double streams a fixed answer cut into chunks of n characters; n runs from 1 to one past
the longest placeholder, and the answer is shifted by every offset below n, so every
placeholder is split at every position it has. A placeholder the provider changed slightly is
still restored; one the vault does not know stays visible and is member_named in the answer's
provenance; odd echoes (inside JSON, inside words, a thousand times over) never crash.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from apps.inference import pipeline
from apps.inference.backends.base import Done, Failed, Token
from apps.providers import calling
from tests.privacy.household import (
    EMAIL,
    IBAN,
    MODEL,
    NAME,
    PHONE,
    PROMPT,
    SAMPLING,
    STREET,
    api_key,
    chat_ask,
    chat_tokens,
    done_of,
    pipeline_ask,
    v1_provenance,
    v1_streamed,
    v1_text,
    v1_whole,
)
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db(transaction=True)
# Placeholders back to back and between words, as a model may write them.
ANSWERED = "Dear [NAME_1]: [EMAIL_1][PHONE_1] and [IBAN_1] at [ADDRESS_1]."
RESTORED = f"Dear {NAME}: {EMAIL}{PHONE} and {IBAN} at {STREET}."
LONGEST = len("[ADDRESS_1]")


def streamed_answers(
    member: Any, double: OpenAIShapedDouble, answers: list[tuple[str, int]]
) -> list[list[str]]:
    """Each (answer the double gives, its chunk size; 0: word by word) asked in turn through
    the pipeline, in one event loop: the tokens the member receives for each. Each ends with
    Done."""

    async def asked() -> list[list[str]]:
        received = []
        try:
            for text, size in answers:
                double.switches.update(answer_text=text, chunk_size=size)
                request = pipeline.AnswerRequest(
                    member,
                    pipeline.Origin.API,
                    MODEL,
                    [{"role": "user", "content": PROMPT}],
                    SAMPLING,
                )
                tokens = []
                async for event in await pipeline.answer(request):
                    if isinstance(event, Token):
                        tokens.append(event.text)
                    else:
                        assert isinstance(event, Done), event
                received.append(tokens)
        finally:
            await calling.client_close()
        return received

    return async_to_sync(asked)()


def test_placeholders_split_at_every_chunk_boundary_are_restored(
    member_named: Any, outside: OpenAIShapedDouble
) -> None:
    cases = [
        ("·" * offset + ANSWERED, size)
        for size in range(1, LONGEST + 2)
        for offset in range(size)  # every cut position, for every size
    ]

    answers = streamed_answers(member_named, outside, cases)

    for (text, size), tokens in zip(cases, answers, strict=True):
        offset = text.index("D")
        assert "".join(tokens) == "·" * offset + RESTORED, (size, offset)
        # Not a piece of a placeholder ever reaches the member, and the answer still streams.
        assert not any("[" in token or "]" in token for token in tokens), (size, offset)
        assert len(tokens) >= len(ANSWERED) // (size + LONGEST), (size, offset)
    assert len(outside.requests) == len(cases) == sum(range(1, LONGEST + 2))
    assert all("[EMAIL_1]" in json.dumps(body) for body in outside.requests)


@pytest.mark.parametrize("size", [1, 4, LONGEST])
def test_v1_restores_the_answer_streamed_and_whole(
    member_named: Any, outside: OpenAIShapedDouble, size: int
) -> None:
    outside.switches.update(answer_text=ANSWERED, chunk_size=size)
    key = api_key(member_named)

    status, chunks = v1_streamed(key)
    assert status == 200 and v1_text(chunks) == RESTORED
    status, completion = v1_whole(key)
    assert status == 200 and completion["choices"][0]["message"]["content"] == RESTORED
    assert "unknown_placeholders" not in completion["sovereign"]


def test_the_chat_streams_the_restored_answer(
    member_named: Any, member_client: Client, outside: OpenAIShapedDouble
) -> None:
    outside.switches.update(answer_text=ANSWERED, chunk_size=3)

    status, events = chat_ask(member_client)

    tokens = chat_tokens(events)
    assert status == 200 and "".join(tokens) == RESTORED and len(tokens) > 5
    assert EMAIL in done_of(events)["html"]


@pytest.mark.parametrize(
    "mangled",
    [
        "Dear [Name_1]: [email_1][PHONE 1] and [ IBAN_1 ] at [address-1].",
        "Dear [NAME 1]: [Email-1][phone_01] and [iban 1] at [ADDRESS  1].",
    ],
)
def test_placeholders_a_provider_changed_slightly_are_still_restored(
    member_named: Any, outside: OpenAIShapedDouble, mangled: str
) -> None:
    outside.switches.update(answer_text=mangled, chunk_size=2)

    text, end = pipeline_ask(member_named)

    assert text == RESTORED
    assert isinstance(end, Done) and "unknown_placeholders" not in end.provenance


def test_an_unknown_placeholder_stays_visible_and_is_named_in_the_provenance(
    member_named: Any, member_client: Client, outside: OpenAIShapedDouble
) -> None:
    outside.switches.update(answer_text="Write to [EMAIL_9], not [EMAIL_1]. [Step 2] next.")
    expected = f"Write to [EMAIL_9], not {EMAIL}. [Step 2] next."

    text, end = pipeline_ask(member_named)
    assert text == expected
    assert isinstance(end, Done) and end.provenance["unknown_placeholders"] == ["[EMAIL_9]"]

    status, chunks = v1_streamed(api_key(member_named))
    assert v1_text(chunks) == expected
    assert v1_provenance(chunks)["unknown_placeholders"] == ["[EMAIL_9]"]

    status, events = chat_ask(member_client)
    assert "".join(chat_tokens(events)) == expected
    assert done_of(events)["provenance"]["unknown_placeholders"] == ["[EMAIL_9]"]


JSON_ECHO = json.dumps({"to": "[EMAIL_1]", "iban": "[IBAN_1]", "[NAME_1]": ["[PHONE_1]"]})


@pytest.mark.parametrize(
    ("answered", "restored"),
    [
        (JSON_ECHO, json.dumps({"to": EMAIL, "iban": IBAN, NAME: [PHONE]}, ensure_ascii=False)),
        ("abc[EMAIL_1]def[PHONE_1]ghi", f"abc{EMAIL}def{PHONE}ghi"),
        ("[EMAIL_1]" * 1000, EMAIL * 1000),
        ("[[EMAIL_1]] [EMAIL_1 [EMAIL_ 1] ]", f"[{EMAIL}] [EMAIL_1 {EMAIL} ]"),
        ("[" * 300 + "]" * 300, "[" * 300 + "]" * 300),
        ("[EMAIL_1" + "x" * 200 + "]", "[EMAIL_1" + "x" * 200 + "]"),
        ("[EMAIL_99999999999999] [\x00_1] [é_1]", "[EMAIL_99999999999999] [\x00_1] [é_1]"),
    ],
    ids=["json", "inside-words", "a-thousand-times", "nested", "brackets", "unclosed", "odd"],
)
def test_odd_echoes_are_restored_or_left_and_never_crash(
    member_named: Any, outside: OpenAIShapedDouble, answered: str, restored: str
) -> None:
    [whole_words, chunked] = streamed_answers(member_named, outside, [(answered, 0), (answered, 7)])

    assert "".join(whole_words) == restored
    assert "".join(chunked) == restored


def test_a_failed_answer_still_gives_back_what_was_held(
    member_named: Any, outside: OpenAIShapedDouble
) -> None:
    outside.switches.update(answer_text="[EMAIL_1] [PHONE_1] [IBAN_1] [NAME_1]", cut_stream=True)

    text, end = pipeline_ask(member_named)

    assert isinstance(end, Failed)
    assert text == f"{EMAIL} {PHONE}"  # two words came before the cut, restored
