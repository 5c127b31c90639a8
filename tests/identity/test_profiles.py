"""Names and pictures from kind-0 profiles, fetched from relays when they can be reached."""

from __future__ import annotations

import http.server
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client
from nostr_sdk import EventBuilder, Keys, Kind, Timestamp

from apps.identity import addresses, pictures, services
from apps.identity.models import Member
from tests.identity.peers import publish
from tests.instances import free_port, signed_login_header

pytestmark = pytest.mark.django_db


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class PictureHost:
    """A web server somewhere else that logs every request, like a tracker would."""

    def __init__(self, body: bytes, content_type: str = "image/png") -> None:
        self.requests: list[str] = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def picture_host() -> Iterator[Callable[..., PictureHost]]:
    hosts: list[PictureHost] = []

    def make(body: bytes = PNG, content_type: str = "image/png") -> PictureHost:
        hosts.append(PictureHost(body, content_type))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def loopback_counts_as_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """The picture host of these tests listens on loopback, which the node otherwise refuses."""
    monkeypatch.setattr(addresses, "is_public", lambda address: address.is_loopback)


_published = itertools.count(1)


def publish_profile(relay_url: str, keys: Keys, **profile: str) -> None:
    # A newer time each: a relay keeps one kind-0 per key and refuses a same-second rival.
    created_at = Timestamp.from_secs(int(time.time()) + next(_published))
    event = EventBuilder(Kind(0), json.dumps(profile)).custom_created_at(created_at)
    publish(relay_url, event.finalize(keys))


def test_a_members_picture_is_fetched_once_and_served_by_the_node(
    settings: Any,
    relay_url: str,
    owner_client: Client,
    member: Member,
    keys: Any,
    picture_host: Callable[..., PictureHost],
    loopback_counts_as_public: None,
) -> None:
    settings.NOSTR_RELAYS = [relay_url]
    tracker = picture_host()
    picture_url = f"{tracker.url}/tracker.png?who=alice"
    publish_profile(relay_url, keys["member"], name="Alice", picture=picture_url)

    services.profile_refresh(member.pk)

    member.refresh_from_db()
    assert (member.name, member.picture) == ("Alice", picture_url)
    assert tracker.requests == ["/tracker.png?who=alice"]  # the node's one fetch
    page = owner_client.get("/people/").content.decode()
    assert "Alice" in page
    assert tracker.url not in page
    served_at = f"/people/{member.pubkey}/picture"
    assert f'src="{served_at}"' in page
    served = owner_client.get(served_at)
    assert (served.status_code, served["Content-Type"], served.content) == (200, "image/png", PNG)
    assert len(tracker.requests) == 1  # showing the page asked the tracker nothing


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>not a picture</html>", "image/png"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml",
        ),
        (PNG + b"\x00" * (600 * 1024), "image/png"),
    ],
    ids=["html", "svg", "too large"],
)
def test_a_picture_that_is_not_a_small_image_is_not_kept(
    settings: Any,
    relay_url: str,
    owner_client: Client,
    member: Member,
    keys: Any,
    picture_host: Callable[..., PictureHost],
    loopback_counts_as_public: None,
    body: bytes,
    content_type: str,
) -> None:
    settings.NOSTR_RELAYS = [relay_url]
    host = picture_host(body, content_type)
    publish_profile(relay_url, keys["member"], name="Bob", picture=f"{host.url}/me")

    services.profile_refresh(member.pk)

    assert len(host.requests) == 1
    assert not pictures.picture_path(member.pubkey).exists()
    assert "<img" not in owner_client.get("/people/").content.decode()
    assert owner_client.get(f"/people/{member.pubkey}/picture").status_code == 404


def test_a_picture_on_a_private_address_is_never_fetched(
    settings: Any,
    relay_url: str,
    member: Member,
    keys: Any,
    picture_host: Callable[..., PictureHost],
) -> None:
    settings.NOSTR_RELAYS = [relay_url]
    lan_host = picture_host()
    publish_profile(relay_url, keys["member"], name="Carol", picture=f"{lan_host.url}/x.png")

    services.profile_refresh(member.pk)

    assert lan_host.requests == []
    assert not pictures.picture_path(member.pubkey).exists()


def test_a_name_that_looks_like_a_key_is_not_taken(
    settings: Any, relay_url: str, owner_client: Client, owner: Member, member: Member, keys: Any
) -> None:
    settings.NOSTR_RELAYS = [relay_url]
    publish_profile(relay_url, keys["member"], name=owner.short_npub)

    services.profile_refresh(member.pk)

    member.refresh_from_db()
    assert member.name == ""
    assert member.display_name == member.short_npub


def test_every_name_is_shown_beside_its_npub(owner_client: Client, member: Member) -> None:
    Member.objects.filter(pk=member.pk).update(name="Dave")
    page = owner_client.get("/people/").content.decode()
    assert re.search(rf"Dave\s*<small class=\"npub\">{re.escape(member.short_npub)}</small>", page)


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
    # Not taken as "no profile" for a day: the next login asks the relays again.
    assert member.profile_fetched_at is None
