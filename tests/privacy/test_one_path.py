"""No path reaches a provider without redaction.

A prompt holding a household member's name, an e-mail address, a phone number, an IBAN and a
street is sent to an outside model through every entry point the node has: the chat (a stored
conversation, two turns), /v1 with an API key (streamed and whole), an agent's request
(`answer_sync`), the chat's cross-check, and a route falling back from a failing provider to
the next. Every provider double receives placeholders only; every egress record holds exactly
the body its provider received, with `found` counting what was taken out. A structural guard
keeps it so: only the pipeline builds an outside backend, only that backend opens a request.
A provider the owner trusts receives the text as written, and its record says so.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.inference import conversations
from apps.inference.pipeline import Origin
from apps.privacy.models import Egress
from apps.providers import routing
from tests.privacy.household import (
    EMAIL,
    FOUND,
    MODEL,
    NAME,
    PRIVATE,
    PROMPT,
    REDACTED,
    api_key,
    chat_ask,
    chat_post,
    chat_tokens,
    done_of,
    egress_matches,
    leaked,
    pipeline_ask,
    provider_double,
    v1_streamed,
    v1_text,
    v1_whole,
)
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
ANSWER = f"lan answers: {PROMPT}"
# BIP-32's first test vector, the master private key.
XPRV = (
    "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TG"
    "tRBeJgk33yuGBxrMPHi"
)  # the double echoes the question: the placeholders come back


@pytest.fixture
def lan2(owner: Any) -> Any:
    double = provider_double("lan2")
    yield double
    double.stop()


def only_placeholders(*doubles: OpenAIShapedDouble) -> None:
    """Every request every double received: asked, and none of the private values in it."""
    received = [body for double in doubles for body in double.requests]
    assert received
    assert leaked(received) == []


def test_a_stored_conversation_in_the_chat_sends_placeholders_turn_after_turn(
    member_named: Any, member_client: Client, outside: OpenAIShapedDouble
) -> None:
    status, events = chat_ask(member_client)
    assert status == 200 and done_of(events)["provenance"]["provider"] == "lan"
    assert "".join(chat_tokens(events)) == ANSWER  # restored
    status, again = chat_ask(
        member_client, f"And {EMAIL} once more?", conversation=events[0]["conversation"]
    )
    assert status == 200 and "".join(chat_tokens(again)) == f"lan answers: And {EMAIL} once more?"

    only_placeholders(outside)
    first, second = outside.requests
    assert first["messages"] == [{"role": "user", "content": REDACTED}]
    # The conversation so far went out again, its values under the same placeholders.
    assert [m["content"] for m in second["messages"]] == [
        REDACTED,
        f"lan answers: {REDACTED}",
        "And [EMAIL_1] once more?",
    ]
    rows = egress_matches([outside])
    assert rows[0].found == FOUND and rows[1].found["email"] == 3
    assert {row.origin for row in rows} == {"chat"}


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "whole"])
def test_v1_with_an_api_key_sends_placeholders_and_answers_with_the_values(
    member_named: Any, outside: OpenAIShapedDouble, streamed: bool
) -> None:
    key = api_key(member_named)

    if streamed:
        status, chunks = v1_streamed(key)
        text = v1_text(chunks)
    else:
        status, completion = v1_whole(key)
        text = completion["choices"][0]["message"]["content"]

    assert status == 200 and text == ANSWER
    only_placeholders(outside)
    assert outside.requests[0]["messages"] == [{"role": "user", "content": REDACTED}]
    [row] = egress_matches([outside])
    assert (row.found, row.origin, row.member_id) == (FOUND, "api", member_named.pk)


def test_stop_sequences_leave_as_placeholders_and_are_checked_for_secrets(
    member_named: Any, outside: OpenAIShapedDouble
) -> None:
    key = api_key(member_named)

    status, _ = v1_whole(key, stop=[f"Regards, {NAME}", EMAIL])
    refused, answer = v1_whole(key, "Hello", stop=[XPRV])

    assert status == 200
    only_placeholders(outside)
    assert outside.requests[0]["stop"] == ["Regards, [NAME_1]", "[EMAIL_1]"]
    [row] = egress_matches([outside])
    assert row.found == {**FOUND, "email": 2, "name": 2}
    assert refused == 400 and answer["error"]["code"] == "secret_in_request"
    assert len(outside.requests) == 1


def test_an_agents_request_through_answer_sync_sends_placeholders(
    member_named: Any, outside: OpenAIShapedDouble
) -> None:
    text, end = pipeline_ask(member_named, origin=Origin.AGENT)

    assert text == ANSWER and end.provenance["provider"] == "lan"  # type: ignore[union-attr]
    only_placeholders(outside)
    [row] = egress_matches([outside])
    assert (row.found, row.origin) == (FOUND, "agent")


def test_the_chats_cross_check_sends_placeholders_to_every_model(
    member_named: Any, member_client: Client, outside: OpenAIShapedDouble, lan2: OpenAIShapedDouble
) -> None:
    conversation = conversations.conversation_start(member_named, "Facts")
    question = conversations.question_save(conversation, PROMPT)
    conversations.answer_save(conversation, "Noted.", {"model": "local"}, "stop")
    models = [MODEL, "lan2/strong-1"]
    body = {"conversation": conversation.pk, "regenerate": question.pk, "models": models}

    status, [result] = chat_post(
        member_client, "/chat/crosscheck", {**body, "prices": dict.fromkeys(models, 0)}
    )

    assert status == 200
    assert [answer["answered_by"] for answer in result["answers"]] == models
    for answer in result["answers"]:
        assert EMAIL in answer["html"] and "[EMAIL_1]" not in answer["html"]
    only_placeholders(outside, lan2)
    assert outside.requests[0]["messages"] == lan2.requests[0]["messages"]
    assert outside.requests[0]["messages"][-1] == {"role": "user", "content": REDACTED}
    rows = egress_matches([outside, lan2])
    assert [row.found for row in rows] == [FOUND, FOUND]


def test_a_route_that_falls_back_sends_placeholders_to_both_providers(
    member_named: Any, outside: OpenAIShapedDouble, lan2: OpenAIShapedDouble
) -> None:
    routing.route_set("strong", "fallback", [MODEL, "lan2/strong-1"])
    outside.switches["status_500"] = True

    status, completion = v1_whole(api_key(member_named), model="route/strong")

    assert status == 200
    assert completion["choices"][0]["message"]["content"] == f"lan2 answers: {PROMPT}"
    assert completion["sovereign"]["fell_back_from"] == [MODEL]
    assert len(outside.requests) == len(lan2.requests) == 1
    only_placeholders(outside, lan2)
    rows = egress_matches([outside, lan2])
    assert [(row.provider, row.outcome) for row in rows] == [
        ("lan", "failed"),
        ("lan2", "answered"),
    ]


def test_a_trusted_provider_receives_the_text_as_written_and_its_record_says_so(
    member_named: Any, owner: Any
) -> None:
    trusted = provider_double("family", trusted=True)
    try:
        status, completion = v1_whole(api_key(member_named), model="family/strong-1")
    finally:
        trusted.stop()

    assert status == 200
    assert completion["choices"][0]["message"]["content"] == f"family answers: {PROMPT}"
    assert trusted.requests[0]["messages"] == [{"role": "user", "content": PROMPT}]
    assert set(leaked(trusted.requests)) >= {v.lower() for v in PRIVATE}  # a leak is seen
    row = Egress.objects.get()
    assert (row.redacted, row.found) == (False, {})


# The structural guard -------------------------------------------------------------------------

# Who may do what leads to a provider without the privacy hook (apps/inference/pipeline.py
# runs it in `_route_prepared`, before the backend is prepared and opened):
ALLOWED = {
    # an outside provider's backend: built only by the pipeline, after the hook
    "OutsideBackend": {"apps/inference/pipeline.py"},
    # a request opened and recorded: only by that backend (calling.py defines them)
    "open_outside": {"apps/providers/backends/chat.py", "apps/providers/calling.py"},
    "outside_prepared": {"apps/providers/backends/chat.py", "apps/providers/calling.py"},
    "chat_body": {"apps/providers/backends/chat.py"},
    # a route whose backend request is not yet redacted: the pipeline's own
    "route_of": {"apps/inference/pipeline.py"},
}


def uses(source: str) -> set[str]:
    """The guarded names a module calls (as a name or an attribute: `calling.open_outside`)."""
    called = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else None
            if isinstance(function, ast.Name):
                name = function.id
            if name in ALLOWED:
                called.add(name)
    return called


def test_only_the_pipeline_and_its_backend_reach_a_provider() -> None:
    found: dict[str, set[str]] = {name: set() for name in ALLOWED}
    modules = [p for p in (ROOT / "apps").rglob("*.py") if "migrations" not in p.parts]
    assert len(modules) > 50
    for path in modules:
        for name in uses(path.read_text()):
            found[name].add(str(path.relative_to(ROOT)))

    strays = {name: sorted(found[name] - ALLOWED[name]) for name in ALLOWED}
    assert strays == dict.fromkeys(ALLOWED, []), (
        "A new way to a provider must go through apps/inference/pipeline.py's privacy hook."
    )
    assert found["OutsideBackend"] and found["open_outside"]  # the guard sees the real callers


def test_the_guard_notices_a_new_entry_point_that_would_bypass_the_hook() -> None:
    bypass = (
        "from apps.providers import calling\n"
        "from apps.providers.backends.chat import OutsideBackend\n"
        "async def ask(provider, request):\n"
        "    return await OutsideBackend(provider).open(request)\n"
        "async def ask_raw(call, kind):\n"
        "    return await calling.open_outside(call, kind)\n"
    )
    assert uses(bypass) == {"OutsideBackend", "open_outside"}
