"""The chat's preview (`POST /chat/preview`): what a question to an outside model would send,
shown before it is sent. It reads the same body a turn sends and computes what leaves as the
turn does, and sends nothing, pays nothing, records no egress and leaves the conversation as it
was; a question it would refuse (a hard stop, a price, a budget) is refused as the turn is.

Providers are OpenAI-shaped doubles on loopback: `lan` (home network, free) and `priced`
(publishing a price per request; never reached here, so nothing is paid).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.inference import chat_preview, conversations
from apps.inference.models import Conversation, LocalModel
from apps.privacy.models import Egress
from apps.providers import services
from apps.providers.models import Provider
from apps.wallet import budgets
from apps.wallet.models import Payment
from tests.inference.conftest import MODEL
from tests.inference.test_chat_outside import PRICE_MSAT, PricedDouble, post_streamed
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

SEED_12 = " ".join(["abandon"] * 11 + ["about"])  # BIP-39's all-zero test vector
QUESTION = "Write to ana@example.org or call +49 30 1234567, and cc bo@example.org."
REDACTED = "Write to [EMAIL_1] or call [PHONE_1], and cc [EMAIL_2]."


@pytest.fixture
def lan(owner: Any) -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        services.provider_add(double.url, kind="openai", name="lan")
        yield double


@pytest.fixture
def priced(owner: Any) -> Iterator[PricedDouble]:
    with PricedDouble() as double:
        services.provider_add(double.url, kind="l402", name="priced")
        yield double


def preview(client: Client, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post("/chat/preview", body, content_type="application/json")
    return response.status_code, response.json()


def nothing_left(*doubles: OpenAIShapedDouble) -> bool:
    """No provider was asked, nothing paid, no egress recorded."""
    asked = any(double.requests for double in doubles)
    return not asked and not Payment.objects.exists() and not Egress.objects.exists()


def test_an_outside_model_is_shown_the_question_with_placeholders_and_nothing_leaves(
    member_client: Client, priced: PricedDouble
) -> None:
    body = {"model": "priced/big-1", "question": QUESTION, "price_msat": PRICE_MSAT}

    status, shown = preview(member_client, body)

    assert status == 200
    assert shown == {
        "outside": True,
        "provider": "priced",
        "trusted": False,
        "messages": [{"role": "user", "content": REDACTED}],
        "found": {"email": 2, "phone": 1},
        "found_said": "2 e-mail addresses, 1 phone number",
    }
    assert nothing_left(priced)
    assert not Conversation.objects.exists()  # a new chat's question was not kept either


def test_what_the_preview_shows_is_what_the_turn_then_sends(
    member_client: Client, lan: OpenAIShapedDouble
) -> None:
    body = {"model": "lan/strong-1", "question": QUESTION, "price_msat": 0}
    _, shown = preview(member_client, body)

    status, events = post_streamed(member_client, "/chat/ask", body)

    assert status == 200
    assert lan.requests[0]["messages"] == shown["messages"]
    done = next(event for event in events if event["event"] == "done")
    assert "ana@example.org" in done["html"]  # the answer came back restored


def test_a_trusted_provider_is_shown_the_question_as_written(
    member_client: Client, lan: OpenAIShapedDouble
) -> None:
    Provider.objects.filter(name="lan").update(trusted=True)
    body = {"model": "lan/strong-1", "question": QUESTION, "price_msat": 0}

    status, shown = preview(member_client, body)

    assert status == 200
    assert (shown["outside"], shown["provider"], shown["trusted"]) == (True, "lan", True)
    assert shown["messages"] == [{"role": "user", "content": QUESTION}]
    assert shown["found"] == {} and shown["found_said"] == ""
    assert nothing_left(lan)


def test_a_local_model_sends_nothing_out(member_client: Client, model: LocalModel) -> None:
    status, shown = preview(member_client, {"model": MODEL, "question": QUESTION})

    assert status == 200
    assert (shown["outside"], shown["provider"], shown["found"]) == (False, "", {})
    assert shown["messages"] == [{"role": "user", "content": QUESTION}]


def test_a_seed_phrase_is_refused_naming_what_it_is_not_its_words(
    member_client: Client, lan: OpenAIShapedDouble
) -> None:
    question = f"Keep this safe for me: {SEED_12}"
    body = {"model": "lan/strong-1", "question": question, "price_msat": 0}

    status, refused = preview(member_client, body)

    assert status == 400
    assert refused == {
        "error": "Not sent: the message contains a wallet seed phrase (BIP-39 words). "
        "Remove it and send again.",
        "code": "secret_in_request",
    }
    assert "abandon" not in json.dumps(refused)
    assert nothing_left(lan)


def test_the_conversation_so_far_is_shown_as_it_leaves_and_it_is_left_as_it_was(
    member_client: Client, lan: OpenAIShapedDouble
) -> None:
    first = {"model": "lan/strong-1", "question": "Write to ana@example.org.", "price_msat": 0}
    post_streamed(member_client, "/chat/ask", first)
    conversation = Conversation.objects.get()
    kept = (conversation.vault_sealed, conversation.updated_at, conversation.messages.count())
    question = "Now to bo@example.org, and ana@example.org again."
    body = {**first, "conversation": conversation.pk, "question": question}

    status, shown = preview(member_client, body)

    assert status == 200
    assert shown["messages"] == [
        {"role": "user", "content": "Write to [EMAIL_1]."},
        {"role": "assistant", "content": "double answers: Write to [EMAIL_1]."},
        {"role": "user", "content": "Now to [EMAIL_2], and [EMAIL_1] again."},
    ]
    assert shown["found_said"] == "4 e-mail addresses"  # each time one is written
    conversation.refresh_from_db()
    assert (conversation.vault_sealed, conversation.updated_at) == kept[:2]
    assert conversation.messages.count() == kept[2]
    assert len(lan.requests) == 1 and Egress.objects.count() == 1  # the first turn's only


def test_a_value_keeps_the_placeholder_an_earlier_turn_gave_it(
    member_client: Client, lan: OpenAIShapedDouble
) -> None:
    first = {"model": "lan/strong-1", "question": "Write to ana@example.org.", "price_msat": 0}
    post_streamed(member_client, "/chat/ask", first)
    conversation = Conversation.objects.get()
    asked = conversation.messages.get(role="user")
    question = "No, to bo@example.org, and ana@example.org in copy."
    edited = {**first, "conversation": conversation.pk, "edit": asked.pk, "question": question}

    status, shown = preview(member_client, edited)

    # The edit replaces the first question: only the conversation's vault knows ana's number.
    assert status == 200
    assert shown["messages"] == [
        {"role": "user", "content": "No, to [EMAIL_2], and [EMAIL_1] in copy."}
    ]
    post_streamed(member_client, "/chat/ask", edited)
    assert lan.requests[-1]["messages"] == shown["messages"]


def test_another_members_conversation_is_not_previewed(
    owner: Any, member_client: Client, lan: OpenAIShapedDouble
) -> None:
    theirs = conversations.conversation_start(owner, "The owner's question")
    body = {"model": "lan/strong-1", "conversation": theirs.pk, "question": "Hi", "price_msat": 0}

    status, refused = preview(member_client, body)

    assert (status, refused["error"]) == (400, "There is no such conversation.")


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"model": "priced/big-1", "question": "How much?", "price_msat": PRICE_MSAT - 1},
            502,
            "The price went up from 20.999 sat to 21 sat; nothing was sent or paid. "
            "Ask again to accept the new price.",
        ),
        (
            {"model": "nowhere/big-1", "question": "Who?"},
            404,
            "The model 'nowhere/big-1' does not exist.",
        ),
        ({"question": "Which model?"}, 400, "Choose a model from the list."),
    ],
)
def test_a_question_the_turn_would_refuse_is_refused_as_it_would_be(
    member_client: Client, priced: PricedDouble, body: dict[str, Any], status: int, error: str
) -> None:
    answered, refused = preview(member_client, body)

    assert (answered, refused["error"]) == (status, error)
    assert nothing_left(priced)


def test_a_price_over_the_members_allowance_is_refused(
    member: Any, member_client: Client, priced: PricedDouble
) -> None:
    budgets.budget_set("member", "day", PRICE_MSAT - 1, member=member)
    body = {"model": "priced/big-1", "question": "How much?", "price_msat": PRICE_MSAT}

    status, refused = preview(member_client, body)

    assert status == 402 and refused["code"] == "over_budget"
    assert refused["error"].startswith("This model costs up to 21 sat a question")
    assert nothing_left(priced)


def test_a_body_that_is_not_json_is_refused(member_client: Client) -> None:
    response = member_client.post("/chat/preview", b"{not json", content_type="application/json")

    assert response.status_code == 400 and "JSON" in response.json()["error"]


def test_only_the_household_may_preview(
    client: Client, friend_client: Client, lan: OpenAIShapedDouble
) -> None:
    body = {"model": "lan/strong-1", "question": QUESTION, "price_msat": 0}

    for asking in (client, friend_client):
        status, refused = preview(asking, body)
        assert (status, refused["error"]) == (403, "Log in as a member of the household.")
    assert nothing_left(lan)


def test_kinds_are_said_in_words_most_first() -> None:
    said = chat_preview.found_said({"phone": 1, "email": 2, "iban": 1, "api_key": 3})

    assert said == "3 API keys or tokens, 2 e-mail addresses, 1 IBAN, 1 phone number"
