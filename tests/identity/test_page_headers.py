"""Every page forbids outside content; pages showing a secret are never cached."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/login/", "/people/", "/keys/", "/system/", "/chat/"])
def test_every_page_carries_a_content_security_policy(owner_client: Client, path: str) -> None:
    policy = owner_client.get(path)["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "img-src 'self' data:" in policy


def test_a_new_api_key_page_is_never_stored(owner_client: Client) -> None:
    response = owner_client.post("/keys/", {"action": "create", "name": "laptop"})

    assert 'id="new-key"' in response.content.decode()
    assert "no-store" in response["Cache-Control"]


def test_an_invite_link_page_is_never_stored(owner_client: Client, owner: Any) -> None:
    response = owner_client.post("/people/", {"action": "invite_link", "role": "member"})

    assert 'id="invite-link"' in response.content.decode()
    assert "no-store" in response["Cache-Control"]
