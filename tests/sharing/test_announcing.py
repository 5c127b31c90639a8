"""Being found on Nostr: the offer published to a real relay as a Routstr provider announcement
and a NIP-89 handler event, both checked by a second Nostr implementation written here (NIP-01
ids, BIP-340 signatures with coincurve), and withdrawn with a NIP-09 deletion naming both."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import coincurve
import pytest
from nostr_sdk import Client, Filter, Kind, PublicKey, RelayUrl, ReqTarget

from apps.identity import services as identity
from apps.identity.backends import relays
from apps.inference.models import LocalModel
from apps.sharing import announcing
from apps.sharing.announcing import ListingError
from apps.sharing.models import Listing, Offer

ONION = "http://" + "a" * 56 + ".onion"
PUBLIC = "https://ai.example.org"


@pytest.fixture
def on_sale(db: None, settings: Any, relay_url: str, tmp_path: Path) -> list[Offer]:
    # A node key of its own for each test: the relay outlives the test, and a deletion a test
    # published would otherwise hide the next test's announcement of the same second.
    settings.DATA_DIR = tmp_path
    settings.NOSTR_RELAYS = [relay_url]
    for name in ("smollm2", "qwen3"):
        LocalModel.objects.create(
            name=name, file_name=f"{name}.gguf", size=1, sha256="a" * 64, architecture="llama",
            parameters=1, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
        )  # fmt: skip
    return [
        Offer.objects.create(model="smollm2", price_msat=21_000),
        Offer.objects.create(
            model="qwen3", price_msat=5_000, per_1k_tokens=True, max_request_msat=50_000
        ),
    ]


# --- a second Nostr implementation: NIP-01 ids and BIP-340 signatures --------------------------


def verified(event: dict[str, Any]) -> dict[str, Any]:
    """The event, once its id and signature are checked from the rules, not by nostr-sdk."""
    canonical = json.dumps(
        [0, event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"]],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    assert digest.hex() == event["id"], "the id is not sha256 of the canonical array"
    key = coincurve.PublicKeyXOnly(bytes.fromhex(event["pubkey"]))
    assert key.verify(bytes.fromhex(event["sig"]), digest), "the BIP-340 signature fails"
    return event


def on_relay(relay_url: str, kinds: list[int]) -> list[dict[str, Any]]:
    """What the relay holds of the node's events of `kinds`, fetched back with nostr-sdk."""
    author = PublicKey.parse(identity.node_keys().public_key().to_hex())

    async def fetch() -> list[dict[str, Any]]:
        client = Client()
        url = RelayUrl.parse(relay_url)
        await client.add_relay(url)
        await client.try_connect(timedelta(seconds=5))
        wanted = Filter().author(author).kinds([Kind(kind) for kind in kinds])
        events = await client.fetch_events(ReqTarget.manual({url: [wanted]}), timedelta(seconds=5))
        await client.shutdown()
        return [json.loads(event.as_json()) for event in events]

    return relays.relays().run(fetch(), 10)


def tag_values(event: dict[str, Any], name: str) -> list[str]:
    return [tag[1] for tag in event["tags"] if tag[0] == name]


def closed_relay() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{probe.getsockname()[1]}"


# --- announcing ------------------------------------------------------------------------------


def test_the_announcement_verifies_independently_and_is_on_the_relay(
    on_sale: list[Offer], relay_url: str
) -> None:
    announcing.listing_set([ONION, PUBLIC], actor="owner")
    outcome = announcing.announce(actor="owner")

    assert outcome.accepted == (relay_url.rstrip("/"),) or outcome.accepted == (relay_url,)
    found = {event["kind"]: verified(event) for event in on_relay(relay_url, [38421, 31990])}
    assert sorted(event["id"] for event in found.values()) == sorted(outcome.event_ids)
    provider, handler = found[38421], found[31990]
    node = identity.node_keys().public_key().to_hex()
    assert provider["pubkey"] == handler["pubkey"] == node
    assert tag_values(provider, "d") == tag_values(handler, "d") == [node[:12]]
    assert tag_values(provider, "u") == tag_values(handler, "u") == [ONION, PUBLIC]
    assert tag_values(provider, "version") == ["0.1.0"]
    assert tag_values(handler, "k") == ["38421"]
    content = json.loads(provider["content"])
    assert content["name"] == "Sovereign" and content["about"]
    assert {m["id"]: m["sats_pricing"] for m in content["models"]} == {
        "qwen3": {"prompt": 0.005, "completion": 0.005, "request": 0, "max_cost": 50.0},
        "smollm2": {"prompt": 0, "completion": 0, "request": 21.0, "max_cost": 21.0},
    }
    assert json.loads(handler["content"])["name"] == "Sovereign"
    row = Listing.objects.get()
    assert row.announced_ids == outcome.event_ids and row.announced_at is not None
    assert announcing.is_announced(row)


def test_withdrawing_publishes_a_deletion_naming_both_events(
    on_sale: list[Offer], relay_url: str
) -> None:
    announcing.listing_set([PUBLIC], actor="owner")
    announced = announcing.announce(actor="owner")
    withdrawn = announcing.withdraw(actor="owner")

    deletions = [verified(e) for e in on_relay(relay_url, [5]) if e["id"] in withdrawn.event_ids]
    assert len(deletions) == 1
    deletion, node = deletions[0], identity.node_keys().public_key().to_hex()
    assert sorted(tag_values(deletion, "a")) == [
        f"31990:{node}:{node[:12]}",
        f"38421:{node}:{node[:12]}",
    ]
    assert sorted(tag_values(deletion, "e")) == sorted(announced.event_ids)
    assert sorted(tag_values(deletion, "k")) == ["31990", "38421"]
    row = Listing.objects.get()
    assert row.announced_ids == [] and row.withdrawn_at is not None
    assert not announcing.is_announced(row)


def test_announcing_again_after_a_withdrawal_is_on_the_relay_again(
    on_sale: list[Offer], relay_url: str
) -> None:
    announcing.listing_set([PUBLIC], actor="owner")
    announcing.announce(actor="owner")
    announcing.withdraw(actor="owner")
    again = announcing.announce(actor="owner")

    ids = {event["id"] for event in on_relay(relay_url, [38421, 31990])}
    assert set(again.event_ids) <= ids
    assert announcing.is_announced(Listing.objects.get())


def test_when_the_last_offer_stops_the_refresh_withdraws(
    on_sale: list[Offer], relay_url: str
) -> None:
    announcing.listing_set([PUBLIC], actor="owner")
    announcing.announce(actor="owner")
    Offer.objects.filter(model="qwen3").delete()
    still = announcing.listing_refresh()
    assert still is not None
    provider = next(e for e in on_relay(relay_url, [38421]) if e["id"] in still.event_ids)
    assert [m["id"] for m in json.loads(provider["content"])["models"]] == ["smollm2"]

    Offer.objects.all().delete()
    gone = announcing.listing_refresh()
    assert gone is not None
    deletion = next(e for e in on_relay(relay_url, [5]) if e["id"] in gone.event_ids)
    assert sorted(tag_values(deletion, "e")) == sorted(still.event_ids)
    assert announcing.listing_refresh() is None  # withdrawn: nothing more to refresh


def test_nothing_on_sale_or_no_address_is_not_announced(
    on_sale: list[Offer], relay_url: str
) -> None:
    with pytest.raises(ListingError, match="Add the address"):
        announcing.announce(actor="owner")
    announcing.listing_set([PUBLIC], actor="owner")
    Offer.objects.all().delete()
    with pytest.raises(ListingError, match="Nothing is on sale"):
        announcing.announce(actor="owner")
    assert Listing.objects.get().announced_at is None


def test_no_relay_taking_it_changes_nothing(on_sale: list[Offer], settings: Any) -> None:
    settings.NOSTR_RELAYS = [closed_relay()]
    announcing.listing_set([PUBLIC], actor="owner")
    with pytest.raises(ListingError, match="No relay took the announcement"):
        announcing.announce(actor="owner")
    row = Listing.objects.get()
    assert row.announced_at is None and row.announced_ids == []


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        (["ftp://ai.example.org"], "starts with https://"),
        (["http://127.0.0.1:8000"], "only from this machine"),
        (["http://192.168.1.20"], "only from this machine"),
        (["https://localhost"], "only from this machine"),
        (["https://me:secret@ai.example.org"], "no user name"),
        (["https://ai.example.org/?key=1"], "no user name"),
        ([f"https://n{i}.example.org" for i in range(6)], "At most 5"),
        (["https://" + "a" * 300 + ".org"], "at most 300"),
    ],
)
def test_bad_addresses_are_refused_and_change_nothing(
    on_sale: list[Offer], urls: list[str], message: str
) -> None:
    announcing.listing_set([PUBLIC], actor="owner")
    with pytest.raises(ListingError, match=message):
        announcing.listing_set(urls, actor="owner")
    assert Listing.objects.get().urls == [PUBLIC]


def test_an_onion_address_as_tor_shows_it_becomes_a_url(on_sale: list[Offer]) -> None:
    onion_host = ONION.removeprefix("http://")
    row = announcing.listing_set([onion_host, f" {PUBLIC}/ ", PUBLIC], actor="owner")
    assert row.urls == [ONION, PUBLIC]
