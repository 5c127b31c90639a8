"""Logging in with a signed NIP-98 event (what a NIP-07 extension produces), and each refusal."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from django.test import Client
from nostr_sdk import EventBuilder, Keys, Kind, Tag, Timestamp

from apps.audit.models import AuditEvent
from apps.identity import services
from apps.identity.models import LoginChallenge, Member, SeenEvent
from apps.identity.nip98 import AuthRefused
from tests.instances import signed_login_header

pytestmark = pytest.mark.django_db

LOGIN_URL = "http://localhost:8000/auth/login"  # on the node's trusted origins by default


def challenge(client: Client) -> str:
    response = client.post("/auth/challenge")
    assert response.status_code == 200
    value: str = response.json()["challenge"]
    return value


def log_in(client: Client, header: str) -> Any:
    return client.post("/auth/login", HTTP_AUTHORIZATION=header)


def signed(
    keys: Keys, tags: list[list[str]], kind: int = 27235, created_at: int | None = None
) -> str:
    builder = EventBuilder(Kind(kind), "").tags([Tag.parse(tag) for tag in tags])
    builder = builder.custom_created_at(Timestamp.from_secs(created_at or int(time.time())))
    return "Nostr " + base64.b64encode(builder.finalize(keys).as_json().encode()).decode()


def state() -> tuple[int, int, int]:
    used_challenges = LoginChallenge.objects.exclude(used_at=None).count()
    return Member.objects.count(), used_challenges, SeenEvent.objects.count()


def logged_in_as(client: Client) -> str | None:
    return client.session.get("_auth_user_id")


def test_a_member_logs_in_with_a_signed_challenge(
    client: Client, member: Member, keys: Any
) -> None:
    header = signed_login_header(keys["member"], LOGIN_URL, challenge(client))

    response = log_in(client, header)

    assert response.status_code == 200
    assert response.json()["role"] == "member"
    assert logged_in_as(client) == str(member.pk)
    assert AuditEvent.objects.filter(action="login", actor=member.pubkey).exists()


def refused(client: Client, header: str, message: str) -> None:
    before = state()
    response = log_in(client, header)
    assert response.status_code == 401
    assert message in response.json()["error"]
    assert logged_in_as(client) is None
    assert state() == before  # nothing changed: no member, no spent challenge, no seen event
    assert AuditEvent.objects.filter(action="login_failed", detail__contains=message).exists()


def test_it_refuses_a_replayed_event(client: Client, member: Member, keys: Any) -> None:
    header = signed_login_header(keys["member"], LOGIN_URL, challenge(client))
    assert log_in(client, header).status_code == 200
    client.logout()
    refused(client, header, "challenge is used")


def test_it_refuses_a_second_event_for_a_used_challenge(
    client: Client, member: Member, keys: Any
) -> None:
    value = challenge(client)
    assert log_in(client, signed_login_header(keys["member"], LOGIN_URL, value)).status_code == 200
    client.logout()
    later = signed_login_header(keys["member"], LOGIN_URL, value, created_at=int(time.time()) - 1)
    refused(client, later, "challenge is used")


def test_it_refuses_an_unknown_challenge(client: Client, member: Member, keys: Any) -> None:
    refused(client, signed_login_header(keys["member"], LOGIN_URL, "made-up"), "challenge is used")


def test_it_refuses_a_stale_event(client: Client, member: Member, keys: Any) -> None:
    old = int(time.time()) - 120
    header = signed_login_header(keys["member"], LOGIN_URL, challenge(client), created_at=old)
    refused(client, header, "not signed within the last 60 seconds")


def test_it_refuses_an_event_from_the_future(client: Client, member: Member, keys: Any) -> None:
    ahead = int(time.time()) + 120
    header = signed_login_header(keys["member"], LOGIN_URL, challenge(client), created_at=ahead)
    refused(client, header, "not signed within the last 60 seconds")


def test_it_refuses_a_wrong_url(client: Client, member: Member, keys: Any) -> None:
    header = signed_login_header(
        keys["member"], "http://evil.example/auth/login", challenge(client)
    )
    refused(client, header, "'u' tag is not this request's URL")


def test_it_refuses_the_url_of_an_untrusted_host_header(
    client: Client, member: Member, keys: Any
) -> None:
    # The Host header is the attacker's to choose: it never makes a URL trusted.
    header = signed_login_header(keys["member"], "http://testserver/auth/login", challenge(client))
    refused(client, header, "'u' tag is not this request's URL")


def test_it_refuses_a_wrong_method(client: Client, member: Member, keys: Any) -> None:
    tags = [["u", LOGIN_URL], ["method", "GET"], ["challenge", challenge(client)]]
    refused(client, signed(keys["member"], tags), "'method' tag is not POST")


def test_it_refuses_a_wrong_kind(client: Client, member: Member, keys: Any) -> None:
    tags = [["u", LOGIN_URL], ["method", "POST"], ["challenge", challenge(client)]]
    refused(client, signed(keys["member"], tags, kind=1), "kind 1; NIP-98 needs 27235")


def test_it_refuses_a_wrong_signature(client: Client, member: Member, keys: Any) -> None:
    header = signed_login_header(keys["member"], LOGIN_URL, challenge(client))
    event = base64.b64decode(header.removeprefix("Nostr ")).decode()
    sig_start = event.index('"sig":"') + 7
    flipped = "0" if event[sig_start] != "0" else "1"
    tampered = event[:sig_start] + flipped + event[sig_start + 1 :]
    refused(client, "Nostr " + base64.b64encode(tampered.encode()).decode(), "id or signature")


def test_it_refuses_a_key_that_is_not_a_member(client: Client, owner: Member, keys: Any) -> None:
    header = signed_login_header(keys["stranger"], LOGIN_URL, challenge(client))
    refused(client, header, "not a member of this node")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "Authorization must be 'Nostr"),
        ("Nostr !!!", "not valid base64"),
        ("Nostr " + base64.b64encode(b'{"kind": 27235}').decode(), "not a valid Nostr event"),
    ],
)
def test_it_refuses_a_malformed_authorization(
    client: Client, member: Member, header: str, message: str
) -> None:
    response = log_in(client, header)
    assert response.status_code == 401
    assert message in response.json()["error"]
    assert logged_in_as(client) is None


def test_failed_logins_are_rate_limited_per_address(
    client: Client, owner: Member, keys: Any
) -> None:
    for _ in range(10):
        log_in(client, signed_login_header(keys["stranger"], LOGIN_URL, challenge(client)))

    response = log_in(client, signed_login_header(keys["owner"], LOGIN_URL, challenge(client)))

    assert response.status_code == 401
    assert "Too many failed logins" in response.json()["error"]
    elsewhere = Client(REMOTE_ADDR="192.0.2.7")
    header = signed_login_header(keys["owner"], LOGIN_URL, challenge(elsewhere))
    assert elsewhere.post("/auth/login", HTTP_AUTHORIZATION=header).status_code == 200


def test_successful_logins_do_not_count_against_the_limit(
    client: Client, owner: Member, keys: Any
) -> None:
    for _ in range(12):
        header = signed_login_header(keys["owner"], LOGIN_URL, challenge(client))
        assert log_in(client, header).status_code == 200


def test_an_event_id_is_accepted_once(db: None) -> None:
    services.event_remember("ab" * 32, int(time.time()))
    with pytest.raises(AuthRefused, match="already used"):
        services.event_remember("ab" * 32, int(time.time()))


def test_a_non_ascii_authorization_is_refused_not_a_crash(client: Client, member: Member) -> None:
    response = client.post("/auth/login", HTTP_AUTHORIZATION="Nostr é")
    assert response.status_code == 401
    assert AuditEvent.objects.filter(action="login_failed").exists()


def refused_behind_the_proxy(forwarded_for: str) -> Any:
    """A failed login arriving through the proxy, which appended the address it saw."""
    proxied = Client(REMOTE_ADDR="172.17.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)
    header = signed_login_header(Keys.generate(), LOGIN_URL, challenge(proxied))
    return proxied.post("/auth/login", HTTP_AUTHORIZATION=header)


@pytest.mark.parametrize("trusted", [["*"], ["172.17.0.0/16"]])
def test_a_spoofed_forwarded_for_does_not_escape_the_login_limit(
    settings: Any, owner: Member, trusted: list[str]
) -> None:
    settings.TRUSTED_PROXIES = trusted
    for attempt in range(10):
        spoofed = f"203.0.113.{attempt}, 198.51.100.7"  # the client wrote the left part
        assert refused_behind_the_proxy(spoofed).status_code == 401

    response = refused_behind_the_proxy("203.0.113.99, 198.51.100.7")

    assert "Too many failed logins" in response.json()["error"]
    assert "Too many" not in refused_behind_the_proxy("198.51.100.8").json()["error"]


def test_trusted_proxies_in_the_chain_are_skipped(settings: Any, owner: Member) -> None:
    settings.TRUSTED_PROXIES = ["172.17.0.0/16", "10.0.0.5"]
    for _ in range(10):
        refused_behind_the_proxy("203.0.113.1, 198.51.100.7, 10.0.0.5")

    assert "Too many" in refused_behind_the_proxy("198.51.100.7").json()["error"]
    assert "Too many" not in refused_behind_the_proxy("203.0.113.1").json()["error"]


def test_a_forwarded_for_from_an_untrusted_peer_is_ignored(settings: Any, owner: Member) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    for attempt in range(10):
        spoofing = Client(REMOTE_ADDR="192.0.2.50", HTTP_X_FORWARDED_FOR=f"203.0.113.{attempt}")
        header = signed_login_header(Keys.generate(), LOGIN_URL, challenge(spoofing))
        spoofing.post("/auth/login", HTTP_AUTHORIZATION=header)

    plain = Client(REMOTE_ADDR="192.0.2.50")
    header = signed_login_header(Keys.generate(), LOGIN_URL, challenge(plain))
    response = plain.post("/auth/login", HTTP_AUTHORIZATION=header)

    assert "Too many failed logins" in response.json()["error"]
