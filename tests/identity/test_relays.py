"""The relay gateway against a real relay: nostr-sdk's LocalRelay on 127.0.0.1."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from nostr_sdk import (
    Event,
    EventBuilder,
    Keys,
    Kind,
    Timestamp,
    UnwrappedGift,
)

from apps.identity.backends import relays as gateway
from apps.identity.backends.base import (
    BunkerUriInvalid,
    DeliveryFailed,
    Profile,
    RelaysUnreachable,
    RemoteSignerError,
    TooManySessions,
)
from tests.identity.peers import FakeSigner, gift_wraps_for, publish

LOGIN_TAGS = [
    ["u", "https://node.example/auth/nostr/login"],
    ["method", "POST"],
    ["challenge", "c-123"],
]


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


@pytest.fixture
def user_keys() -> Keys:
    return Keys.generate()


@pytest.fixture
def signer(relay_url: str, user_keys: Keys) -> Iterator[FakeSigner]:
    fake = FakeSigner(relay_url, user_keys, secret="bunker-secret")
    yield fake
    fake.close()


def profile_event(keys: Keys, content: dict[str, Any], created_at: int | None = None) -> Event:
    builder = EventBuilder(Kind(0), json.dumps(content))
    if created_at is not None:
        builder = builder.custom_created_at(Timestamp.from_secs(created_at))
    return builder.finalize(keys)


def wait_for_status(session_id: str, seconds: float = 10) -> tuple[str, str | None]:
    end = time.monotonic() + seconds
    while (status := gateway.remote_signer_status(session_id))[0] == "pending":
        assert time.monotonic() < end, "the remote signer login never finished"
        time.sleep(0.05)
    return status


def assert_login_event(event_json: str, user_keys: Keys) -> None:
    event = Event.from_json(event_json)
    assert event.verify()
    assert event.author().to_hex() == user_keys.public_key().to_hex()
    assert event.kind().as_u16() == 27235
    assert [tag.to_vec() for tag in event.tags()] == LOGIN_TAGS
    assert abs(event.created_at().as_secs() - time.time()) < 30


# --- NIP-17 ---------------------------------------------------------------------------


def test_private_message_reaches_the_recipient(relay_url: str) -> None:
    node, owner = Keys.generate(), Keys.generate()

    result = gateway.send_private_message(
        node.secret_key().to_hex(), owner.public_key().to_hex(), "Approve task 42?", [relay_url]
    )

    assert result.accepted == (relay_url,)
    wraps = gift_wraps_for(relay_url, owner)
    assert [wrap.id().to_hex() for wrap in wraps] == [result.wrap_id]
    unwrapped = UnwrappedGift.from_gift_wrap(owner, wraps[0])
    assert unwrapped.sender().to_hex() == node.public_key().to_hex()
    assert unwrapped.rumor().kind().as_u16() == 14
    assert unwrapped.rumor().content() == "Approve task 42?"
    assert unwrapped.rumor().id().to_hex() == result.message_id


def test_private_message_counts_only_relays_that_took_it(relay_url: str, closed_url: str) -> None:
    node, owner = Keys.generate(), Keys.generate()

    result = gateway.send_private_message(
        node.secret_key().to_hex(), owner.public_key().to_hex(), "hi", [relay_url, closed_url]
    )

    assert result.accepted == (relay_url,)
    assert list(result.refused) == [closed_url]


def test_private_message_nobody_accepts_fails_clearly(closed_url: str) -> None:
    node, owner = Keys.generate(), Keys.generate()
    started = time.monotonic()

    with pytest.raises(DeliveryFailed, match="No relay accepted the message") as failure:
        gateway.send_private_message(
            node.secret_key().to_hex(), owner.public_key().to_hex(), "hi", [closed_url, "nope"]
        )

    assert time.monotonic() - started < 3
    assert failure.value.result.accepted == ()
    assert set(failure.value.result.refused) == {closed_url, "nope"}
    assert "not a relay URL" in failure.value.result.refused["nope"]


def test_private_message_rejects_a_bad_key(relay_url: str) -> None:
    with pytest.raises(ValueError, match="secret key is not valid"):
        gateway.send_private_message("zz", Keys.generate().public_key().to_hex(), "hi", [relay_url])


# --- profiles -------------------------------------------------------------------------


def test_fetch_profile_returns_the_newest_metadata(relay_url: str) -> None:
    alice = Keys.generate()
    now = int(time.time())
    publish(relay_url, profile_event(alice, {"name": "old"}, created_at=now - 100))
    publish(
        relay_url,
        profile_event(alice, {"name": "Alice", "picture": "https://pics.example/a.png"}, now),
    )

    profile = gateway.fetch_profile(alice.public_key().to_hex(), [relay_url])

    assert profile == Profile(name="Alice", picture="https://pics.example/a.png", names=("Alice",))


def test_fetch_profile_cleans_what_relays_send(relay_url: str) -> None:
    mallory = Keys.generate()
    content = {"name": "M" * 300 + "\n", "picture": "javascript:alert(1)"}
    publish(relay_url, profile_event(mallory, content))

    profile = gateway.fetch_profile(mallory.public_key().to_hex(), [relay_url])

    assert profile == Profile(name="M" * 100, picture=None, names=("M" * 100,))


@pytest.mark.parametrize(
    "picture",
    ["data:image/png;base64,AAAA", "https://x.example/" + "a" * 500, "ftp://x.example/a.png"],
)
def test_fetch_profile_drops_unsafe_pictures(relay_url: str, picture: str) -> None:
    bob = Keys.generate()
    publish(relay_url, profile_event(bob, {"name": "Bob", "picture": picture}))

    profile = gateway.fetch_profile(bob.public_key().to_hex(), [relay_url])

    assert profile == Profile("Bob", None, names=("Bob",))


def test_fetch_profile_of_an_unknown_key_is_none(relay_url: str) -> None:
    assert gateway.fetch_profile(Keys.generate().public_key().to_hex(), [relay_url]) is None


@pytest.mark.parametrize("down", [True, False], ids=["relay down", "no relay"])
def test_fetch_profile_with_relays_down_says_so_instead_of_none(
    closed_url: str, down: bool
) -> None:
    # "No profile" would be kept for a day; an outage must be retried at the next login.
    with pytest.raises(RelaysUnreachable):
        gateway.fetch_profile(Keys.generate().public_key().to_hex(), [closed_url] if down else [])


# --- NIP-46 ---------------------------------------------------------------------------


def test_nostrconnect_login_gets_a_signed_event(
    relay_url: str, signer: FakeSigner, user_keys: Keys
) -> None:
    session = gateway.remote_signer_start([relay_url], LOGIN_TAGS)

    parts = urlsplit(session.uri)
    query = parse_qs(parts.query)
    assert parts.scheme == "nostrconnect"
    assert query["relay"] == [relay_url]
    assert json.loads(query["metadata"][0]) == {"name": "Sovereign"}
    assert query["name"] == ["Sovereign"]
    assert query["perms"] == ["sign_event:27235"]
    assert len(query["secret"][0]) >= 32
    assert gateway.remote_signer_status(session.session_id) == ("pending", None)

    signer.scan(session.uri)
    state, event_json = wait_for_status(session.session_id)

    assert state == "signed", event_json
    assert event_json is not None
    assert_login_event(event_json, user_keys)
    assert signer.methods[:2] == ["get_public_key", "sign_event"]


def test_nostrconnect_login_ignores_a_wrong_secret(relay_url: str, signer: FakeSigner) -> None:
    session = gateway.remote_signer_start([relay_url], LOGIN_TAGS, wait=1.5)

    signer.scan(session.uri, answer="not-the-secret")

    assert wait_for_status(session.session_id) == (
        "failed",
        "The signer did not answer within 1.5 seconds.",
    )
    assert "sign_event" not in signer.methods


def test_nostrconnect_sessions_are_capped_and_cancellable(
    relay_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "MAX_PENDING_SESSIONS", 1)
    first = gateway.remote_signer_start([relay_url], LOGIN_TAGS)

    with pytest.raises(TooManySessions):
        gateway.remote_signer_start([relay_url], LOGIN_TAGS)

    gateway.remote_signer_cancel(first.session_id)
    assert gateway.remote_signer_status(first.session_id)[0] == "failed"
    second = gateway.remote_signer_start([relay_url], LOGIN_TAGS)
    gateway.remote_signer_cancel(second.session_id)


def test_nostrconnect_login_needs_a_relay() -> None:
    with pytest.raises(ValueError, match="needs a relay"):
        gateway.remote_signer_start(["http://not-a-relay"], LOGIN_TAGS)


def test_bunker_sign_returns_a_signed_event(signer: FakeSigner, user_keys: Keys) -> None:
    # Through the pinning proxy: the local relay is one the owner configured.
    event_json = gateway.bunker_sign(
        signer.bunker_uri(), LOGIN_TAGS, timeout=10, trusted_relays=[signer.relay_url]
    )

    assert_login_event(event_json, user_keys)
    assert signer.methods[:3] == ["connect", "get_public_key", "sign_event"]


def test_a_bunker_relay_on_a_private_address_is_never_dialled(signer: FakeSigner) -> None:
    """Checked when connecting, whatever was checked before: the signer never hears of it."""
    with pytest.raises(RemoteSignerError):
        gateway.bunker_sign(signer.bunker_uri(), LOGIN_TAGS, timeout=3)

    assert signer.methods == []


def test_bunker_sign_with_a_wrong_secret_is_refused(signer: FakeSigner) -> None:
    uri = signer.bunker_uri().replace("bunker-secret", "guess")

    with pytest.raises(RemoteSignerError, match="invalid secret"):
        gateway.bunker_sign(uri, LOGIN_TAGS, timeout=10, trusted_relays=[signer.relay_url])


def test_bunker_sign_times_out_clearly(closed_url: str) -> None:
    uri = f"bunker://{Keys.generate().public_key().to_hex()}?relay={closed_url}"

    with pytest.raises(RemoteSignerError, match="did not answer within 1 seconds"):
        gateway.bunker_sign(uri, LOGIN_TAGS, timeout=1)


HEX = Keys.generate().public_key().to_hex()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "starts with bunker://"),
        (f"nostrconnect://{HEX}?relay=wss://r.example", "starts with bunker://"),
        ("bunker://npub1xyz?relay=wss://r.example", "64-hex-digit key"),
        (f"bunker://{HEX}", "names no relay"),
        (f"bunker://{HEX}?relay=https://r.example", "not valid: unsupported URL scheme"),
        ("bunker://" + "a" * 3000, "too long"),
    ],
)
def test_bunker_sign_refuses_malformed_uris(uri: str, message: str) -> None:
    with pytest.raises(BunkerUriInvalid, match=message):
        gateway.bunker_sign(uri, LOGIN_TAGS)


def test_a_child_forked_after_relay_use_refuses_instead_of_hanging(relay_url: str) -> None:
    # nostr-sdk's runtime threads do not survive os.fork: calls in the child would hang.
    someone = Keys.generate().public_key().to_hex()
    gateway.fetch_profile(someone, [relay_url])  # the parent has used the relays
    readable, writable = os.pipe()

    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        outcome = b"answered"
        try:
            gateway.fetch_profile(someone, [relay_url], timeout=2)
        except RuntimeError as error:
            outcome = b"refused" if "before this process forked" in str(error) else b"other"
        except BaseException:
            outcome = b"other"
        os.write(writable, outcome)
        os._exit(0)
    os.close(writable)
    ready, _, _ = select.select([readable], [], [], 30)
    outcome = os.read(readable, 64) if ready else b"hung"
    os.close(readable)
    os.waitpid(child, 0)

    assert outcome == b"refused"
