"""Names and pictures from kind-0 profiles, fetched from relays when they can be reached."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client
from nostr_sdk import EventBuilder, Keys, Kind

from apps.identity import services
from apps.identity.models import Member
from tests.identity.peers import publish
from tests.instances import free_port, signed_login_header

pytestmark = pytest.mark.django_db


def test_a_members_profile_is_fetched_and_shown(
    settings: Any, relay_url: str, owner_client: Client, member: Member, keys: Any
) -> None:
    settings.NOSTR_RELAYS = [relay_url]
    profile = {"name": "Alice", "picture": "https://pics.example/alice.png"}
    publish(relay_url, EventBuilder(Kind(0), json.dumps(profile)).finalize(keys["member"]))

    services.profile_refresh(member.pk)

    member.refresh_from_db()
    assert (member.name, member.picture) == ("Alice", "https://pics.example/alice.png")
    page = owner_client.get("/people/").content.decode()
    assert "Alice" in page
    assert 'src="https://pics.example/alice.png"' in page


def test_without_a_profile_the_short_npub_is_shown(
    settings: Any, relay_url: str, owner: Member
) -> None:
    settings.NOSTR_RELAYS = [relay_url]
    member = services.member_add(Keys.generate().public_key().to_hex(), "member")

    services.profile_refresh(member.pk)

    member.refresh_from_db()
    assert member.profile_fetched_at is not None
    assert member.display_name == member.short_npub
    assert member.short_npub.startswith("npub1")


def test_a_relay_outage_never_blocks_an_extension_login(
    settings: Any,
    client: Client,
    member: Member,
    keys: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.NOSTR_RELAYS = [f"ws://127.0.0.1:{free_port()}"]  # nothing listens there
    challenge = client.post("/auth/challenge").json()["challenge"]
    header = signed_login_header(keys["member"], "http://localhost:8000/auth/login", challenge)
    queued_before = set(settings.BROKER_DIR.glob("*.msg"))

    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/auth/login", HTTP_AUTHORIZATION=header)

    assert response.status_code == 200
    assert time.monotonic() - started < 2
    # The profile fetch went to the worker's queue instead of being awaited.
    queued = set(settings.BROKER_DIR.glob("*.msg")) - queued_before
    assert len(queued) == 1
    assert "identity.profile_refresh" in next(iter(queued)).read_text()
    services.profile_refresh(member.pk)  # and when it runs, it gives up quietly
    member.refresh_from_db()
    assert member.name == ""
    assert member.profile_fetched_at is not None
