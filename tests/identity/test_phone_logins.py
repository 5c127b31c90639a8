"""Logging in from a phone, against a real relay: a code by Nostr DM, and remote signers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from nostr_sdk import Keys

from apps.audit.models import AuditEvent
from apps.identity.models import Attempt, LoginCode, Member
from tests.identity.peers import FakeSigner, code_in_dm, gift_wraps_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def node_relays(settings: Any, relay_url: str) -> None:
    settings.NOSTR_RELAYS = [relay_url]


SAME_ANSWER = "If this key is a member here, a code is on its way by Nostr DM."


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def send_code(client: Client, keys: Keys) -> Any:
    return client.post("/auth/code/send", {"npub": keys.public_key().to_bech32()})


def verify_code(client: Client, keys: Keys, code: str) -> Any:
    return client.post("/auth/code/verify", {"npub": keys.public_key().to_bech32(), "code": code})


def test_a_member_logs_in_with_a_code_sent_by_dm(
    client: Client, member: Member, keys: Any, relay_url: str
) -> None:
    assert send_code(client, keys["member"]).status_code == 200
    code = code_in_dm(relay_url, keys["member"])

    response = verify_code(client, keys["member"], code)

    assert response.status_code == 200
    assert client.session["_auth_user_id"] == str(member.pk)
    assert verify_code(Client(), keys["member"], code).status_code == 401  # works once


def test_a_stranger_gets_no_dm_and_the_same_answer(
    client: Client, owner: Member, stranger: Keys, relay_url: str
) -> None:
    response = send_code(client, stranger)

    assert response.json()["message"].startswith("If this key is a member here")
    assert gift_wraps_for(relay_url, stranger) == []
    assert not LoginCode.objects.exists()


def timed_code_request(keys: Keys, address: str) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    response = send_code(Client(REMOTE_ADDR=address), keys)
    return time.perf_counter() - started, response.status_code, response.json()


@pytest.mark.parametrize("relays_up", [False, True], ids=["relays down", "relays up"])
def test_a_member_and_a_stranger_get_the_same_answer_as_fast(
    settings: Any, member: Member, keys: Any, stranger: Keys, closed_url: str, relays_up: bool
) -> None:
    if not relays_up:
        settings.NOSTR_RELAYS = [closed_url]
    timings: dict[str, list[float]] = {"member": [], "stranger": []}
    for attempt in range(3):  # alternated, so the machine's load falls on both alike
        for name, person in (("member", keys["member"]), ("stranger", stranger)):
            elapsed, status, answer = timed_code_request(person, f"192.0.2.{attempt}")
            assert (status, answer) == (200, {"message": SAME_ANSWER})
            timings[name].append(elapsed)

    # Sending the DM happens after the answer: the member's request waits for no relay.
    assert min(timings["member"]) < 3 * min(timings["stranger"]) + 0.05


def test_wrong_codes_lock_the_code_after_five_tries(
    client: Client, member: Member, keys: Any, relay_url: str
) -> None:
    send_code(client, keys["member"])
    code = code_in_dm(relay_url, keys["member"])
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert (
            "wrong or no longer valid" in verify_code(client, keys["member"], wrong).json()["error"]
        )

    refused = verify_code(client, keys["member"], code)  # the right one, too late

    assert refused.status_code == 401
    assert "wrong or no longer valid" in refused.json()["error"]
    assert client.session.get("_auth_user_id") is None


def test_a_strangers_code_is_refused_in_the_same_words(
    client: Client, owner: Member, stranger: Keys
) -> None:
    assert verify_code(client, stranger, "123456").json() == {
        "error": "That code is wrong or no longer valid; ask for a new one."
    }


def test_wrong_guesses_are_capped_per_key_across_codes(
    client: Client, member: Member, keys: Any, relay_url: str
) -> None:
    for round_number in (1, 2):
        send_code(client, keys["member"])
        code = code_in_dm(relay_url, keys["member"], nth=round_number)
        wrong = "000000" if code != "000000" else "111111"
        for _ in range(5):
            verify_code(client, keys["member"], wrong)
    LoginCode.objects.all().delete()
    Attempt.objects.filter(key__startswith="code-send").delete()
    send_code(client, keys["member"])
    fresh = code_in_dm(relay_url, keys["member"], nth=3)
    # From another address, which has no failures of its own: only the per-key cap is left.
    elsewhere = Client(REMOTE_ADDR="192.0.2.44")

    refused = verify_code(elsewhere, keys["member"], fresh)

    # Even a fresh code is refused for the rest of the day: 10 wrong guesses were made.
    assert refused.status_code == 401
    assert "wrong or no longer valid" in refused.json()["error"]


def test_an_expired_code_is_refused(
    client: Client, member: Member, keys: Any, relay_url: str
) -> None:
    send_code(client, keys["member"])
    code = code_in_dm(relay_url, keys["member"])
    LoginCode.objects.update(expires_at=LoginCode.objects.get().expires_at.replace(year=2000))

    assert "no longer valid" in verify_code(client, keys["member"], code).json()["error"]


def test_asking_for_codes_is_rate_limited_for_the_whole_quarter_hour(
    client: Client, member: Member, keys: Any
) -> None:
    for _ in range(3):
        assert send_code(client, keys["member"]).status_code == 200
    ten_minutes_ago = timezone.now() - timedelta(minutes=11)
    Attempt.objects.filter(key__startswith="code-send").update(at=ten_minutes_ago)
    client.post("/auth/challenge")  # other attempts, and their clean-up, go on meanwhile
    assert "Too many codes" in send_code(client, keys["member"]).json()["error"]


@pytest.mark.parametrize(
    "shape",
    [str, str.upper, "nostr:{}".format, "my key is {}".format],
    ids=["plain", "upper", "uri", "text"],
)
def test_a_pasted_secret_key_is_refused_and_never_repeated(
    client: Client, owner: Member, shape: Any
) -> None:
    nsec = Keys.generate().secret_key().to_bech32()
    pasted = shape(nsec)
    response = client.post("/auth/code/send", {"npub": pasted})
    assert response.status_code == 400
    assert "secret key" in response.json()["error"]
    assert nsec[5:].lower() not in response.content.decode().lower()


@pytest.fixture
def member_signer(relay_url: str, keys: Any) -> Iterator[FakeSigner]:
    signer = FakeSigner(relay_url, keys["member"], secret="bunker-secret")
    yield signer
    signer.close()


def test_a_member_logs_in_by_scanning_the_qr_code(
    client: Client, member: Member, member_signer: FakeSigner
) -> None:
    started = client.post("/auth/remote/start").json()
    assert "<svg" in started["qr_svg"]

    member_signer.scan(started["uri"])

    deadline = time.monotonic() + 15
    while (status := client.get("/auth/remote/status")).json().get("state") == "pending":
        assert time.monotonic() < deadline, "the signer never finished"
        time.sleep(0.1)
    assert status.status_code == 200
    assert client.session["_auth_user_id"] == str(member.pk)
    assert AuditEvent.objects.filter(action="login", detail="remote signer").exists()


def test_a_member_logs_in_with_a_pasted_bunker_address(
    client: Client, member: Member, member_signer: FakeSigner
) -> None:
    response = client.post("/auth/bunker", {"uri": member_signer.bunker_uri()})

    assert response.status_code == 200
    assert client.session["_auth_user_id"] == str(member.pk)


@pytest.mark.parametrize(
    "relay",
    [
        "ws://127.0.0.2:7777",
        "wss://127.0.0.2:7777",
        "wss://localhost",
        "wss://[::1]",
        "wss://127.1:7777",  # the short forms inet_aton reads as 127.0.0.1
        "wss://0x7f000001:7777",
        "wss://2130706433:7777",
        "wss://0177.0.0.1:7777",
        "wss://localhost.:7777",
        "wss://[::ffff:127.0.0.1]:7777",
        "wss://192.168.1.20:7777",
        f"wss://{socket.gethostname()}:7777",  # a name that resolves to this machine
        "wss://relay.invalid:7777",  # a name that resolves to nothing
    ],
)
def test_a_bunker_on_a_plain_or_private_relay_is_refused(
    client: Client, member: Member, relay: str
) -> None:
    uri = f"bunker://{Keys.generate().public_key().to_hex()}?relay={relay}"
    response = client.post("/auth/bunker", {"uri": uri})
    assert response.status_code == 401
    assert "wss:// relays on public hosts" in response.json()["error"]
    assert AuditEvent.objects.filter(action="login_failed", detail__startswith="bunker").exists()


@pytest.mark.parametrize("uri", ["bunker://nonsense", "bunker://[abc?relay=wss://x.example"])
def test_a_malformed_bunker_address_is_refused(client: Client, member: Member, uri: str) -> None:
    response = client.post("/auth/bunker", {"uri": uri})
    assert response.status_code == 401
    assert Member.objects.count() == 2  # the owner and the member, no one new


def test_status_without_a_started_login_is_refused(client: Client, owner: Member) -> None:
    assert client.get("/auth/remote/status").status_code == 400
