"""The chat's preview (`POST /chat/preview`): what a question to an outside model would send,
shown before it is sent. It reads the same body a turn sends and computes what leaves as the
turn does, and sends nothing, pays nothing, records no egress and leaves the conversation as it
was; a question it would refuse (a hard stop, a price, a budget) is refused as the turn is.

Providers are OpenAI-shaped doubles on loopback: `lan` (home network, free) and `priced`
(publishing a price per request; never reached here, so nothing is paid).
"""

from __future__ import annotations

import json
import re
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
    digest = shown.pop("digest")
    assert shown == {
        "outside": True,
        "provider": "priced",
        "trusted": False,
        "messages": [{"role": "user", "content": REDACTED}],
        "found": {"email": 2, "phone": 1},
        "found_said": "2 e-mail addresses, 1 phone number",
    }
    assert re.fullmatch(r"[0-9a-f]{64}", digest)  # the question carries it back
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


def test_only_the_household_and_friends_something_is_shared_with_may_preview(
    client: Client, friend_client: Client, lan: OpenAIShapedDouble
) -> None:
    body = {"model": "lan/strong-1", "question": QUESTION, "price_msat": 0}

    for asking in (client, friend_client):  # nobody logged in; a friend with nothing shared
        status, refused = preview(asking, body)
        assert status == 403 and refused["error"].startswith("Log in as a member of the household")
    assert nothing_left(lan)


def test_kinds_are_said_in_words_most_first() -> None:
    said = chat_preview.found_said({"phone": 1, "email": 2, "iban": 1, "api_key": 3})

    assert said == "3 API keys, 2 e-mail addresses, 1 IBAN, 1 phone number"


# A cross-check (a body naming its `models`): each outside model's own request, as sent.


@pytest.fixture
def lan2(owner: Any) -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        services.provider_add(double.url, kind="openai", name="lan2")
        yield double


def asked_locally(member: Any, question: str = QUESTION) -> tuple[Conversation, dict[str, Any]]:
    """A conversation whose last question the node's model answered; a cross-check's body."""
    conversation = conversations.conversation_start(member, question)
    asked = conversations.question_save(conversation, question)
    conversations.answer_save(conversation, "Done.", {"model": MODEL}, "stop")
    return conversation, {"conversation": conversation.pk, "regenerate": asked.pk}


def _asked(conversation: Conversation) -> int:
    return int(conversation.messages.filter(role="user").latest("id").pk)


def test_a_cross_check_is_shown_what_each_outside_model_would_receive_and_nothing_leaves(
    member: Any,
    member_client: Client,
    model: LocalModel,
    lan: OpenAIShapedDouble,
    priced: PricedDouble,
) -> None:
    conversation, body = asked_locally(member)
    models = [MODEL, "lan/strong-1", "priced/big-1"]
    prices = {MODEL: 0, "lan/strong-1": 0, "priced/big-1": PRICE_MSAT}
    kept = (conversation.vault_sealed, conversation.updated_at)

    status, shown = preview(member_client, {**body, "models": models, "prices": prices})

    assert status == 200
    digests = [each.pop("digest") for each in shown["leaving"]]
    assert digests[0] == digests[1] and re.fullmatch(r"[0-9a-f]{64}", digests[0])  # same text
    leaving = {
        "trusted": False,
        "messages": [{"role": "user", "content": REDACTED}],
        "found": {"email": 2, "phone": 1},
        "found_said": "2 e-mail addresses, 1 phone number",
        "refused": "",
    }
    assert shown == {  # the node's own model is not listed: nothing goes out to it
        "outside": True,
        "leaving": [
            {"model": "lan/strong-1", "provider": "lan", **leaving},
            {"model": "priced/big-1", "provider": "priced", **leaving},
        ],
    }
    assert nothing_left(lan, priced)
    conversation.refresh_from_db()
    assert (conversation.vault_sealed, conversation.updated_at) == kept
    assert conversation.messages.count() == 2


def test_what_a_cross_check_preview_shows_is_what_each_model_then_receives(
    member_client: Client, lan: OpenAIShapedDouble, lan2: OpenAIShapedDouble
) -> None:
    Provider.objects.filter(name="lan2").update(trusted=True)
    first = {"model": "lan/strong-1", "question": "Write to ana@example.org.", "price_msat": 0}
    post_streamed(member_client, "/chat/ask", first)
    conversation = Conversation.objects.get()
    edited = {**first, "conversation": conversation.pk, "edit": _asked(conversation)}
    post_streamed(member_client, "/chat/ask", {**edited, "question": "Write to bo@example.org."})
    models = ["lan/strong-1", "lan2/strong-1"]
    body = {
        "conversation": conversation.pk,
        "regenerate": _asked(conversation),
        "models": models,
        "prices": dict.fromkeys(models, 0),
    }
    sent_before = len(lan.requests)

    status, shown = preview(member_client, body)
    answered, [result] = post_streamed(member_client, "/chat/crosscheck", body)

    assert (status, answered) == (200, 200)
    redacted, trusted = shown["leaving"]
    # The conversation's vault gave ana [EMAIL_1] and bo [EMAIL_2]; a cross-check is not kept,
    # its requests have placeholders of their own, and the preview shows those.
    assert redacted["messages"] == [{"role": "user", "content": "Write to [EMAIL_1]."}]
    assert lan.requests[sent_before:][0]["messages"] == redacted["messages"]
    assert (trusted["trusted"], trusted["found"]) == (True, {})
    assert trusted["messages"] == [{"role": "user", "content": "Write to bo@example.org."}]
    assert lan2.requests[0]["messages"] == trusted["messages"]
    assert [answer["model"] for answer in result["answers"]] == models


def test_a_cross_check_model_whose_text_changed_since_its_preview_is_sent_nothing(
    member_client: Client, lan: OpenAIShapedDouble, lan2: OpenAIShapedDouble
) -> None:
    first = {"model": "lan/strong-1", "question": "Write to ana@example.org.", "price_msat": 0}
    post_streamed(member_client, "/chat/ask", first)
    conversation = Conversation.objects.get()
    models = ["lan/strong-1", "lan2/strong-1"]
    body = {
        "conversation": conversation.pk,
        "regenerate": _asked(conversation),
        "models": models,
        "prices": dict.fromkeys(models, 0),
    }
    status, shown = preview(member_client, body)
    leaving = {each["model"]: each["digest"] for each in shown["leaving"]}
    Provider.objects.filter(name="lan2").update(trusted=True)  # the owner, in between
    sent_before = len(lan.requests)

    answered, [result] = post_streamed(
        member_client, "/chat/crosscheck", {**body, "leaving": leaving}
    )

    assert (status, answered) == (200, 200), result
    redacted, changed = result["answers"]
    assert lan.requests[sent_before:][0]["messages"] == shown["leaving"][0]["messages"]
    assert lan2.requests == []  # it would have been sent the address as written
    assert "not what the preview showed" in changed["error"]


def test_a_cross_check_with_a_seed_phrase_is_refused_and_nothing_leaves(
    member: Any, member_client: Client, model: LocalModel, lan: OpenAIShapedDouble
) -> None:
    _, body = asked_locally(member, f"Keep this safe for me: {SEED_12}")
    models = [MODEL, "lan/strong-1"]
    prices = dict.fromkeys(models, 0)

    status, refused = preview(member_client, {**body, "models": models, "prices": prices})

    assert status == 400 and refused["code"] == "secret_in_request"
    assert refused["error"].startswith("Not sent: the message contains a wallet seed phrase")
    assert "abandon" not in json.dumps(refused)
    assert nothing_left(lan)


def test_a_cross_check_model_over_the_allowance_is_shown_refused_beside_the_others(
    member: Any, member_client: Client, lan: OpenAIShapedDouble, priced: PricedDouble
) -> None:
    budgets.budget_set("member", "day", PRICE_MSAT - 1, member=member)
    _, body = asked_locally(member)
    models = ["priced/big-1", "lan/strong-1"]
    prices = {"priced/big-1": PRICE_MSAT, "lan/strong-1": 0}

    status, shown = preview(member_client, {**body, "models": models, "prices": prices})

    assert status == 200
    refused, asked = shown["leaving"]
    assert (refused["model"], refused["messages"]) == ("priced/big-1", [])
    assert refused["refused"].startswith("This model costs up to 21 sat a question")
    assert (asked["model"], asked["refused"]) == ("lan/strong-1", "")
    assert asked["messages"] == [{"role": "user", "content": REDACTED}]
    assert nothing_left(lan, priced)


def test_a_cross_check_of_the_nodes_models_only_sends_nothing_out(
    member: Any, member_client: Client, model: LocalModel
) -> None:
    second = {"name": "second-model", "file_name": "second.gguf", "sha256": "b" * 64}
    LocalModel.objects.create(**second, **_same_as(model))
    _, body = asked_locally(member)
    models = [MODEL, "second-model"]

    status, shown = preview(member_client, {**body, "models": models})

    assert (status, shown) == (200, {"outside": False, "leaving": []})


@pytest.mark.parametrize(
    ("models", "prices", "error"),
    [
        (["lan/strong-1"], {"lan/strong-1": 0}, "Tick 2 to 4 different models."),
        (
            ["lan/strong-1", "priced/big-1"],
            {"lan/strong-1": 0, "priced/big-1": PRICE_MSAT - 1},
            "The price of priced/big-1 went up from 20.999 sat to 21 sat; nothing was sent "
            "or paid. Ask again to accept the new price.",
        ),
    ],
)
def test_a_cross_check_it_would_refuse_is_refused_as_it_would_be(
    member: Any,
    member_client: Client,
    lan: OpenAIShapedDouble,
    priced: PricedDouble,
    models: list[str],
    prices: dict[str, int],
    error: str,
) -> None:
    _, body = asked_locally(member)

    status, refused = preview(member_client, {**body, "models": models, "prices": prices})

    assert (status, refused["error"]) == (400, error)
    assert nothing_left(lan, priced)


def _same_as(model: LocalModel) -> dict[str, Any]:
    fields = ("size", "architecture", "parameters", "quantization", "source")
    return {field: getattr(model, field) for field in fields}
