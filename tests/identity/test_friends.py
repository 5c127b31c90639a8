"""Friends get only what the owner shares with them: for now, no model at all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from apps.identity import services
from apps.identity.models import Member

pytestmark = pytest.mark.django_db

CHAT = {"model": "any", "messages": [{"role": "user", "content": "Hello"}]}


def bearer(member: Member) -> str:
    _, key = services.apikey_create(member, "laptop")
    return f"Bearer {key}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("get", "/v1/models", None), ("post", "/v1/chat/completions", CHAT)],
    ids=["models", "chat completions"],
)
def test_a_friend_is_refused_every_model_in_openais_shape(
    friend: Member, method: str, path: str, body: Any
) -> None:
    client = Client(HTTP_AUTHORIZATION=bearer(friend))
    call = getattr(client, method)

    response = call(path, json.dumps(body), content_type="application/json") if body else call(path)

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "model_not_shared"
    assert "not shared any model with you" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_a_member_still_lists_the_models(member: Member) -> None:
    response = Client(HTTP_AUTHORIZATION=bearer(member)).get("/v1/models")

    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_a_friend_still_reaches_their_own_identity(friend: Member) -> None:
    response = Client(HTTP_AUTHORIZATION=bearer(friend)).get("/api/me")

    assert response.status_code == 200
    assert response.json()["role"] == "friend"


def test_a_friend_cannot_open_the_chat(friend_client: Client) -> None:
    assert friend_client.get("/chat/").status_code == 403
    asked = friend_client.post("/chat/ask", b"{}", content_type="application/json")
    assert asked.status_code == 403


def test_a_friend_is_told_on_the_keys_page_what_their_keys_reach(friend_client: Client) -> None:
    page = friend_client.get("/keys/").content.decode()
    assert "once the owner shares one with friends" in page
