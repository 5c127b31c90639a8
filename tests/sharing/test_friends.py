"""Friends use what the owner shares with them, within a daily quota: through /v1 and the
dashboard's chat, on the real engine and the bundled SmolLM2 file, in this process."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from apps.inference.models import Conversation, LocalModel
from apps.sharing import services as sharing
from apps.sharing.models import Usage
from tests.inference.conftest import (  # noqa: F401 - the engine fixture, used by name
    CONTEXT,
    MODEL,
    RecordingDecoder,
    bundled_local_model,
    engine,
)
from tests.privacy.household import api_key, v1_whole

OTHER = "other-model"  # in the catalog, never shared: no engine needed to be refused it


@pytest.fixture
def local(transactional_db: None, engine: RecordingDecoder, settings: Any) -> LocalModel:  # noqa: F811
    settings.ENGINE_CONTEXT_PER_SLOT = CONTEXT
    LocalModel.objects.create(
        name=OTHER, file_name="other.gguf", size=1, sha256="b" * 64, architecture="llama",
        parameters=1, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip
    return bundled_local_model()


def shared(friend: Any, requests: int = 5, tokens: int | None = None) -> None:
    sharing.share_set(friend, [MODEL], requests, tokens, actor="test")


def ask(key: str, model: str = MODEL) -> tuple[int, dict[str, Any]]:
    return v1_whole(key, "Say hello.", model=model, max_tokens=8, temperature=0, seed=1)


def used(friend: Any) -> Usage:
    return Usage.objects.get(member=friend)


def test_a_friend_lists_only_the_models_shared_with_them(
    local: LocalModel, friend: Any, member: Any
) -> None:
    shared(friend)

    listed = Client(HTTP_AUTHORIZATION=f"Bearer {api_key(friend)}").get("/v1/models")
    household = Client(HTTP_AUTHORIZATION=f"Bearer {api_key(member)}").get("/v1/models")

    assert [entry["id"] for entry in listed.json()["data"]] == [MODEL]
    assert sorted(entry["id"] for entry in household.json()["data"]) == sorted([MODEL, OTHER])


def test_a_friend_asking_a_model_not_shared_is_refused_403_and_nothing_counted(
    local: LocalModel, friend: Any
) -> None:
    shared(friend)

    status, refused = ask(api_key(friend), OTHER)

    assert status == 403
    assert refused["error"]["code"] == "model_not_shared"
    assert MODEL in refused["error"]["message"]  # it says what is shared
    assert not Usage.objects.filter(member=friend, requests__gt=0).exists()


def test_a_friend_within_quota_is_answered_and_counted_by_requests_and_tokens(
    local: LocalModel, friend: Any
) -> None:
    shared(friend, requests=2)

    status, completion = ask(api_key(friend))

    assert status == 200, completion
    usage = completion["usage"]
    assert used(friend).requests == 1
    assert used(friend).tokens == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_over_the_requests_quota_a_friend_gets_429_with_when_it_resets(
    local: LocalModel, friend: Any, member: Any
) -> None:
    shared(friend, requests=1)
    key = api_key(friend)
    assert ask(key)[0] == 200

    response = Client(HTTP_AUTHORIZATION=f"Bearer {key}").post(
        "/v1/chat/completions",
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Again?"}]}),
        content_type="application/json",
    )

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded" and error["type"] == "rate_limit_error"
    assert "00:00 UTC" in error["message"]
    retry = int(response["Retry-After"])
    assert abs(retry - sharing.seconds_to_reset()) <= 5 and 0 < retry <= 86_400
    assert used(friend).requests == 1  # the refused request is not counted
    assert ask(api_key(member))[0] == 200  # the household has no quota


def test_a_token_quota_refuses_once_the_tokens_are_used(local: LocalModel, friend: Any) -> None:
    shared(friend, requests=10, tokens=20)  # one answer's prompt and words pass 20 tokens
    key = api_key(friend)
    assert ask(key)[0] == 200
    assert used(friend).tokens >= 20

    status, refused = ask(key)

    assert status == 429 and refused["error"]["code"] == "quota_exceeded"
    assert "20 tokens" in refused["error"]["message"]


def test_the_quota_resets_at_the_next_midnight_utc() -> None:
    late = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)

    assert sharing.reset_at(late) == datetime(2026, 3, 2, tzinfo=UTC)
    assert sharing.seconds_to_reset(late) == 30


# The dashboard's chat ---------------------------------------------------------------------


def chat_ask(client: Client, question: str, model: str = MODEL) -> tuple[int, bytes, str | None]:
    """The chat's answer to one question: status, body, Retry-After."""
    body = {"model": model, "question": question}

    async def exchange() -> tuple[int, bytes, str | None]:
        asking = AsyncClient()
        asking.cookies = client.cookies  # the friend's session
        response = await asking.post("/chat/ask", body, content_type="application/json")
        if response.streaming:
            content = b"".join([chunk async for chunk in response.streaming_content])
        else:
            content = response.content
        return response.status_code, content, response.headers.get("Retry-After")

    return async_to_sync(exchange)()


def test_a_friend_chats_with_a_shared_model_their_conversation_theirs_alone(
    local: LocalModel, friend: Any, friend_client: Client, member_client: Client
) -> None:
    shared(friend)

    page = friend_client.get("/chat/")
    status, body, _ = chat_ask(friend_client, "Say hello.")

    assert page.status_code == 200
    options = page.content.decode()
    assert f'value="{MODEL}"' in options and f'value="{OTHER}"' not in options
    assert "Chat settings" not in options  # the household's page, not a friend's
    assert status == 200, body
    events = [json.loads(line) for line in body.splitlines()]
    assert any(event["event"] == "done" for event in events)
    conversation = Conversation.objects.get(member=friend)
    assert friend_client.get(f"/chat/{conversation.pk}/").status_code == 200
    assert member_client.get(f"/chat/{conversation.pk}/").status_code == 404
    assert used(friend).requests == 1  # the title the node asked for itself is not counted


def test_over_quota_the_chat_says_when_it_resets(
    local: LocalModel, friend: Any, friend_client: Client
) -> None:
    shared(friend, requests=1)
    assert chat_ask(friend_client, "Say hello.")[0] == 200

    status, body, retry = chat_ask(friend_client, "And again?")

    assert status == 429
    assert "quota" in json.loads(body)["error"] and "00:00 UTC" in json.loads(body)["error"]
    assert retry is not None and int(retry) > 0
    assert chat_ask(friend_client, "Other?", OTHER)[0] == 403


def test_the_friends_page_shows_what_is_shared_and_used_today(
    local: LocalModel, friend: Any, friend_client: Client
) -> None:
    shared(friend, requests=3)
    assert ask(api_key(friend))[0] == 200

    page = friend_client.get("/shared/").content.decode()

    assert MODEL in page and "used 1 of 3 requests" in page


def test_a_friend_uses_only_the_outside_model_shared_with_them(
    local: LocalModel, friend: Any, added: None
) -> None:
    sharing.share_set(friend, [MODEL, "alpha/strong-1"], 5, actor="test", outside_cap_sat=50)
    key = api_key(friend)

    listed = Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/v1/models").json()["data"]
    status, completion = ask(key, "alpha/strong-1")
    refused_status, refused = ask(key, "alpha/strong-2")

    assert [entry["id"] for entry in listed] == [MODEL, "alpha/strong-1"]
    assert status == 200, completion
    assert completion["sovereign"]["provider"] == "alpha"
    assert refused_status == 403 and refused["error"]["code"] == "model_not_shared"
    assert used(friend).requests == 1


def test_the_menu_shows_the_chat_to_a_friend_only_once_something_is_shared(
    local: LocalModel, friend: Any, friend_client: Client
) -> None:
    chat_link = 'href="/chat/">Chat</a>'  # the menu's, not the page's "Open the chat"
    assert chat_link not in friend_client.get("/shared/").content.decode()

    shared(friend)

    assert chat_link in friend_client.get("/shared/").content.decode()
