"""The chat with outside models: the picker's prices, the price shown sent and held to, each
answer naming who gave it (live and after reload), "Ask <model>" on the last question, and a
cross-check of the last question across models, side by side and not kept.

Providers are OpenAI-shaped doubles on loopback added through the service: home-network ones
(free, `kind="openai"`), and one publishing a price per request, whose price is checked before
anything is sent (it is never reached here: paying is tested with the L402 kind).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from apps.inference import conversations
from apps.inference.models import ChatMessage, Conversation, LocalModel
from apps.privacy.models import Egress
from apps.providers import routing, services
from tests.inference.conftest import MODEL
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

LOCAL_PROVENANCE = {"model": MODEL, "model_sha256": "a" * 64, "sampling": {}}
PRICE_MSAT = 21_000


class PricedDouble(OpenAIShapedDouble):
    """A provider that publishes a price per request (as an L402 provider would)."""

    name = "priced"
    models = ("big-1",)

    def model_entry(self, model_id: str) -> dict[str, Any]:
        return {**super().model_entry(model_id), "sovereign_price": {"request_msat": PRICE_MSAT}}


@pytest.fixture
def lan(owner: Any) -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        services.provider_add(double.url, kind="openai", name="lan")
        yield double


@pytest.fixture
def lan2(owner: Any) -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        services.provider_add(double.url, kind="openai", name="lan2")
        yield double


@pytest.fixture
def priced(owner: Any) -> Iterator[PricedDouble]:
    with PricedDouble() as double:
        services.provider_add(double.url, kind="l402", name="priced")
        yield double


def post_streamed(client: Client, url: str, body: dict[str, Any]) -> tuple[int, list[Any]]:
    """A chat POST read in the event loop that asked it, as the page reads it: the status,
    and the JSON lines (or the one JSON refusal)."""

    async def exchange() -> tuple[int, bytes]:
        asking = AsyncClient()
        asking.cookies = client.cookies  # the member's session
        response = await asking.post(url, body, content_type="application/json")
        if response.streaming:
            return response.status_code, b"".join([c async for c in response.streaming_content])
        return response.status_code, response.content

    status, raw = async_to_sync(exchange)()
    return status, [json.loads(line) for line in raw.splitlines()]


def done_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(event for event in events if event["event"] == "done")


def answered_locally(member: Any, question: str = "What is a sat?") -> tuple[Conversation, int]:
    conversation = conversations.conversation_start(member, question)
    asked = conversations.question_save(conversation, question)
    conversations.answer_save(conversation, "A small coin.", LOCAL_PROVENANCE, "stop")
    return conversation, asked.pk


def test_the_picker_lists_the_nodes_models_then_outside_ones_with_their_prices(
    member_client: Client, model: LocalModel, lan: Any, priced: Any
) -> None:
    page = member_client.get("/chat/").content.decode()

    local = page.index('<optgroup label="On this node">')
    outside = page.index('<optgroup label="Outside (paid per question)">')
    assert local < page.index(f'<option value="{MODEL}" selected>') < outside
    assert f'data-price-msat="{PRICE_MSAT}">priced/big-1 · up to 21 sat</option>' in page
    assert 'data-provider="lan" data-price-msat="0">lan/strong-1 · free</option>' in page
    assert 'id="egress-note" hidden' in page  # a local model is chosen: nothing leaves


def test_a_page_never_opens_on_an_outside_model_even_after_one_answered(
    member: Any, member_client: Client, model: LocalModel, lan: Any
) -> None:
    conversation, _ = answered_locally(member)
    provenance = {"model": "lan/strong-1", "provider": "lan", "cost_msat": 0}
    conversations.answer_save(conversation, "From outside.", provenance, "stop")

    page = member_client.get(f"/chat/{conversation.pk}/").content.decode()

    assert f'<option value="{MODEL}" selected>' in page
    assert "lan/strong-1" in page and 'value="lan/strong-1" selected' not in page


def test_the_prices_follow_the_longest_answer_asked_for(
    member_client: Client, model: LocalModel, priced: Any
) -> None:
    listed = member_client.get("/chat/models", {"max_tokens": "64"}).json()

    assert listed["max_tokens"] == 64
    assert {m["name"]: m["price_msat"] for m in listed["models"]} == {
        MODEL: 0,
        "priced/big-1": PRICE_MSAT,
    }
    assert [m["outside"] for m in listed["models"]] == [False, True]
    assert member_client.get("/chat/models", {"max_tokens": "lots"}).status_code == 400


def test_an_outside_answer_names_its_provider_live_and_after_reload(
    member: Any, member_client: Client, lan: OpenAIShapedDouble
) -> None:
    body = {"model": "lan/strong-1", "question": "Who are you?", "price_msat": 0}

    status, events = post_streamed(member_client, "/chat/ask", body)

    assert status == 200
    provenance = done_of(events)["provenance"]
    assert (provenance["provider"], provenance["model"], provenance["cost_msat"]) == (
        "lan",
        "lan/strong-1",
        0,
    )
    answer = ChatMessage.objects.get(role="assistant")
    assert answer.content == "double answers: Who are you?"
    assert (answer.provider, answer.model_name, answer.cost_msat) == ("lan", "lan/strong-1", 0)
    assert answer.request_id == Egress.objects.get().request_id == provenance["request_id"]
    page = member_client.get(f"/chat/{answer.conversation_id}/").content.decode()
    assert "Answered outside this node by lan · lan/strong-1 · cost 0 sat" in page
    assert 'data-provider="lan"' in page


def test_a_price_above_the_one_shown_is_refused_and_nothing_leaves(
    member_client: Client, priced: PricedDouble
) -> None:
    body = {"model": "priced/big-1", "question": "How much?", "price_msat": PRICE_MSAT - 1}

    status, refusal = post_streamed(member_client, "/chat/ask", body)

    assert status == 502
    assert refusal[0]["error"] == (
        "The price went up from 20.999 sat to 21 sat; nothing was sent or paid. "
        "Ask again to accept the new price."
    )
    assert priced.requests == [] and not Egress.objects.exists()
    assert not Conversation.objects.exists()


def test_answering_again_with_an_outside_model_replaces_the_local_answer(
    member: Any, member_client: Client, model: LocalModel, lan: OpenAIShapedDouble
) -> None:
    conversation, question = answered_locally(member)
    body = {"model": "lan/strong-1", "conversation": conversation.pk, "regenerate": question}
    body["price_msat"] = 0

    status, events = post_streamed(member_client, "/chat/ask", body)

    assert status == 200 and done_of(events)["provenance"]["provider"] == "lan"
    assert [(m.role, m.provider) for m in conversation.messages.all()] == [
        ("user", ""),
        ("assistant", "lan"),
    ]
    assert lan.requests[0]["messages"][-1] == {"role": "user", "content": "What is a sat?"}


def test_a_private_chat_offers_and_asks_only_the_nodes_models(
    member_client: Client, model: LocalModel, lan: OpenAIShapedDouble
) -> None:
    page = member_client.get("/chat/private/").content.decode()
    body = {"model": "lan/strong-1", "question": "Secret?", "private": True, "price_msat": 0}

    status, refusal = post_streamed(member_client, "/chat/ask", body)

    assert "lan/strong-1" not in page
    assert status == 400 and "only the models on this node" in refusal[0]["error"]
    assert lan.requests == [] and not Egress.objects.exists()


def test_a_cross_check_shows_each_models_answer_naming_who_gave_it_and_keeps_nothing(
    member: Any, member_client: Client, lan: OpenAIShapedDouble, lan2: OpenAIShapedDouble
) -> None:
    conversation, question = answered_locally(member)
    models = ["lan/strong-1", "lan2/strong-2"]
    prices = {"lan/strong-1": 0, "lan2/strong-2": 0}
    body = {"conversation": conversation.pk, "regenerate": question, "models": models}
    body["prices"] = prices

    status, [result] = post_streamed(member_client, "/chat/crosscheck", body)

    assert status == 200
    assert [(a["model"], a["provider"], a["cost_msat"]) for a in result["answers"]] == [
        ("lan/strong-1", "lan", 0),
        ("lan2/strong-2", "lan2", 0),
    ]
    assert result["answers"][0]["html"].strip() == "<p>double answers: What is a sat?</p>"
    assert result["note_html"] == ""
    assert result["note_missing"] == (
        "The note could not be written: this node has no local model to write it."
    )
    assert [r["model"] for r in lan.requests + lan2.requests] == ["strong-1", "strong-2"]
    assert conversation.messages.count() == 2  # not kept
    assert Egress.objects.count() == 2  # but what left the node is recorded


@pytest.mark.parametrize(
    ("models", "says"),
    [
        (["lan/strong-1"], "Tick 2 to 4 different models"),
        (["lan/strong-1", "lan/strong-1"], "Tick 2 to 4 different models"),
        (["lan/strong-1", "lan/strong-2", "priced/big-1", MODEL, "lan/x"], "Tick 2 to 4"),
        (["lan/strong-1", "nowhere/model"], "There is no model 'nowhere/model'"),
        (["lan/strong-1", "priced/big-1"], "The price of priced/big-1 went up from 20 sat to 21"),
    ],
)
def test_a_cross_check_refused_asks_no_model(
    member: Any,
    member_client: Client,
    model: LocalModel,
    lan: OpenAIShapedDouble,
    priced: PricedDouble,
    models: list[str],
    says: str,
) -> None:
    conversation, question = answered_locally(member)
    prices = {"lan/strong-1": 0, "lan/strong-2": 0, "priced/big-1": 20_000}
    body = {"conversation": conversation.pk, "regenerate": question, "models": models}
    body["prices"] = prices

    status, [refusal] = post_streamed(member_client, "/chat/crosscheck", body)

    assert status == 400 and says in refusal["error"]
    assert lan.requests == priced.requests == []
    assert not Egress.objects.exists()


def test_a_cross_check_takes_only_the_last_question_and_only_from_the_household(
    member: Any, member_client: Client, friend_client: Client, lan: Any, lan2: Any
) -> None:
    conversation, question = answered_locally(member)
    conversations.question_save(conversation, "A later question")
    models = ["lan/strong-1", "lan2/strong-2"]
    body = {"conversation": conversation.pk, "regenerate": question, "models": models}

    status, [refusal] = post_streamed(member_client, "/chat/crosscheck", body)

    assert status == 400 and "Only the last question" in refusal["error"]
    assert post_streamed(friend_client, "/chat/crosscheck", body)[0] == 403


def test_a_route_is_offered_with_its_price_and_says_whether_it_leaves_the_node(
    member_client: Client, model: LocalModel, lan: Any, priced: Any
) -> None:
    routing.route_set("careful", "fallback", [MODEL, "priced/big-1"])
    routing.route_set("home", "fallback", [MODEL])

    page = member_client.get("/chat/").content.decode()

    assert (
        '<option value="route/careful" data-route="fallback" data-leaves="true" '
        f'data-price-msat="{PRICE_MSAT}">route/careful · up to 21 sat</option>'
    ) in page
    assert 'data-leaves="false" data-price-msat="0">route/home · free</option>' in page
    stronger = page[page.index('<select name="stronger">') :]
    assert "route/" not in stronger[: stronger.index("</select>")]  # models, not routes


def test_a_spread_route_keeps_a_conversation_with_the_model_that_answered_it_first(
    member: Any, member_client: Client, lan: OpenAIShapedDouble, lan2: OpenAIShapedDouble
) -> None:
    routing.route_set("apart", "spread", ["lan/strong-1", "lan2/strong-2"])
    asked = {"model": "route/apart", "price_msat": 0}

    _, first = post_streamed(member_client, "/chat/ask", {**asked, "question": "One?"})
    started = next(event for event in first if event["event"] == "start")
    later = {**asked, "question": "Two?", "conversation": started["conversation"]}
    _, second = post_streamed(member_client, "/chat/ask", later)
    _, other = post_streamed(member_client, "/chat/ask", {**asked, "question": "New?"})

    providers = [done_of(events)["provenance"]["provider"] for events in (first, second, other)]
    assert providers == ["lan", "lan", "lan2"]  # kept with its conversation; a new one elsewhere
    assert done_of(first)["provenance"]["route"] == "route/apart"
