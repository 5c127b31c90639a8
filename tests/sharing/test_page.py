"""The owner's Sharing page: only the owner sees it; its forms sell and stop selling, share with
a friend and stop, keep the listing's addresses and announce; bad input changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference.models import LocalModel
from apps.sharing.models import Balance, Credit, Listing, Offer, Sale, Share, Usage
from apps.wallet.models import Invoice

PUBLIC = "https://ai.example.org"


@pytest.fixture
def models(db: None) -> list[str]:
    names = ["qwen3", "smollm2"]
    for name in names:
        LocalModel.objects.create(
            name=name, file_name=f"{name}.gguf", size=1, sha256="a" * 64, architecture="llama",
            parameters=1, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
        )  # fmt: skip
    return names


def test_only_the_owner_sees_the_page(
    owner_client: Client, member_client: Client, friend_client: Client
) -> None:
    assert owner_client.get("/sharing/").status_code == 200
    assert member_client.get("/sharing/").status_code == 403
    assert friend_client.get("/sharing/").status_code == 403
    assert member_client.post("/sharing/offers/save", {"model": "x"}).status_code == 403
    assert friend_client.post("/sharing/listing/announce").status_code == 403
    assert Client().get("/sharing/").status_code == 302  # to the login page


def test_the_nav_links_the_page_for_the_owner_only(
    owner_client: Client, member_client: Client
) -> None:
    assert 'href="/sharing/"' in owner_client.get("/privacy/").content.decode()
    assert 'href="/sharing/"' not in member_client.get("/privacy/").content.decode()


def test_the_owner_sells_a_model_per_request_and_stops(
    owner_client: Client, models: list[str]
) -> None:
    answer = owner_client.post(
        "/sharing/offers/save", {"model": "qwen3", "pricing": "request", "price_sat": "21"}
    )
    assert answer.status_code == 302
    offer = Offer.objects.get()
    assert (offer.model, offer.price_msat, offer.per_1k_tokens) == ("qwen3", 21_000, False)
    page = owner_client.get("/sharing/").content.decode()
    assert "21 sat per request" in page

    assert owner_client.post("/sharing/offers/stop", {"model": "qwen3"}).status_code == 302
    assert not Offer.objects.exists()
    assert list(AuditEvent.objects.values_list("action", flat=True).order_by("pk")) == [
        "offer_set",
        "offer_stopped",
    ]


def test_the_owner_sells_per_thousand_tokens_with_a_most(
    owner_client: Client, models: list[str]
) -> None:
    owner_client.post(
        "/sharing/offers/save",
        {"model": "smollm2", "pricing": "tokens", "price_sat": "2", "max_request_sat": "40"},
    )
    offer = Offer.objects.get()
    assert (offer.price_msat, offer.per_1k_tokens, offer.max_request_msat) == (2000, True, 40_000)
    page = owner_client.get("/sharing/").content.decode()
    assert "2 sat per 1,000 tokens, at most 40 sat a request" in page


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"model": "qwen3", "pricing": "request", "price_sat": "0"}, "whole number of sats"),
        ({"model": "qwen3", "pricing": "request", "price_sat": "1.5"}, "type a whole number"),
        ({"model": "qwen3", "pricing": "request", "price_sat": "-3"}, "type a whole number"),
        ({"model": "nope", "pricing": "request", "price_sat": "5"}, "no local model named"),
        ({"model": "qwen3", "pricing": "tokens", "price_sat": "5"}, "needs a most"),
    ],
)
def test_a_bad_offer_is_refused_and_changes_nothing(
    owner_client: Client, models: list[str], form: dict[str, str], message: str
) -> None:
    Offer.objects.create(model="qwen3", price_msat=7000)
    answer = owner_client.post("/sharing/offers/save", form)
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert list(Offer.objects.values_list("model", "price_msat")) == [("qwen3", 7000)]


def test_stopping_a_model_not_on_sale_says_so(owner_client: Client, models: list[str]) -> None:
    answer = owner_client.post("/sharing/offers/stop", {"model": "qwen3"})
    assert answer.status_code == 400 and "is not on sale" in answer.content.decode()


def test_the_owner_shares_with_a_friend_and_sees_today_s_usage(
    owner_client: Client, friend: Any, models: list[str]
) -> None:
    answer = owner_client.post(
        "/sharing/friends/save",
        {"member": friend.pk, "models": ["qwen3"], "daily_requests": "40", "daily_tokens": ""},
    )
    assert answer.status_code == 302
    share = Share.objects.get(member=friend)
    assert (share.model_names, share.daily_requests, share.daily_tokens) == (["qwen3"], 40, None)

    Usage.objects.create(member=friend, day=timezone.now().date(), requests=3, tokens=512)
    page = owner_client.get("/sharing/").content.decode()
    assert "3 of 40" in page and "512 (no limit)" in page

    assert owner_client.post("/sharing/friends/stop", {"member": friend.pk}).status_code == 302
    assert not Share.objects.exists()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"models": [], "daily_requests": "10"}, "at least one model"),
        ({"models": ["nope"], "daily_requests": "10"}, "no local model named"),
        ({"models": ["qwen3"], "daily_requests": "0"}, "Requests a day"),
        ({"models": ["qwen3"], "daily_requests": "ten"}, "type a whole number"),
        ({"models": ["qwen3"], "daily_requests": "10", "daily_tokens": "0"}, "Tokens a day"),
    ],
)
def test_a_bad_share_is_refused_and_changes_nothing(
    owner_client: Client, friend: Any, models: list[str], form: dict[str, Any], message: str
) -> None:
    Share.objects.create(member=friend, model_names=["smollm2"], daily_requests=5)
    answer = owner_client.post("/sharing/friends/save", {"member": friend.pk, **form})
    assert answer.status_code == 400
    assert message in answer.content.decode()
    share = Share.objects.get()
    assert (share.model_names, share.daily_requests) == (["smollm2"], 5)


def test_only_friends_are_shared_with(owner_client: Client, member: Any, models: list[str]) -> None:
    form = {"member": member.pk, "models": ["qwen3"], "daily_requests": "10"}
    answer = owner_client.post("/sharing/friends/save", form)
    assert answer.status_code == 400 and "not a friend" in answer.content.decode()
    assert not Share.objects.exists()


def test_the_owner_keeps_the_addresses_and_bad_ones_change_nothing(
    owner_client: Client, models: list[str]
) -> None:
    owner_client.post("/sharing/listing/save", {"urls": f"{PUBLIC}\n\n"})
    assert Listing.objects.get().urls == [PUBLIC]
    answer = owner_client.post("/sharing/listing/save", {"urls": f"{PUBLIC}\nhttp://10.0.0.2"})
    assert answer.status_code == 400
    page = answer.content.decode()
    assert "only from this machine" in page and "http://10.0.0.2" in page  # kept in the form
    assert Listing.objects.get().urls == [PUBLIC]


def test_announcing_from_the_page_publishes_and_shows_the_state(
    owner_client: Client, models: list[str], settings: Any, relay_url: str, tmp_path: Path
) -> None:
    settings.DATA_DIR, settings.NOSTR_RELAYS = tmp_path, [relay_url]
    refused = owner_client.post("/sharing/listing/announce")
    assert refused.status_code == 400 and "Nothing is on sale" in refused.content.decode()

    Offer.objects.create(model="qwen3", price_msat=10_000)
    owner_client.post("/sharing/listing/save", {"urls": PUBLIC})
    announced = owner_client.post("/sharing/listing/announce", follow=True)
    page = announced.content.decode()
    assert "Announced on ws://127.0.0.1" in page and "Announce again" in page
    assert len(Listing.objects.get().announced_ids) == 2

    withdrawn = owner_client.post("/sharing/listing/withdraw", follow=True).content.decode()
    assert "Asked to delete the announcement" in withdrawn and "Withdrawn 20" in withdrawn
    assert Listing.objects.get().announced_ids == []


def test_strangers_totals_and_latest_sales(owner_client: Client, models: list[str]) -> None:
    balance = Balance.objects.create(
        kind=Balance.Kind.L402, token_id="ab" * 32, balance_msat=4_000, expires_at=timezone.now()
    )
    Sale.objects.create(balance=balance, model="qwen3", prompt_tokens=9, completion_tokens=30,
                        cost_msat=21_000)  # fmt: skip
    Sale.objects.create(balance=balance, model="qwen3", cost_msat=1_500)
    page = owner_client.get("/sharing/").content.decode()
    assert '<dd id="sales-count">2</dd>' in page
    assert '<dd id="sales-earned">22.500 sat</dd>' in page
    assert "4 sat in 1 balance" in page and "9 + 30" in page
    assert f"L402, balance {balance.pk}" in page


def test_the_wallet_ledger_shows_what_a_stranger_s_payment_bought(
    owner_client: Client, models: list[str]
) -> None:
    balance = Balance.objects.create(
        kind=Balance.Kind.KEY, token_id="cd" * 32, balance_msat=0, expires_at=timezone.now()
    )
    invoice = Invoice.objects.create(
        purpose=f"sale:key:{balance.token_id}", label="sovereign:sale", caller="sharing",
        bolt11="lnbcrt1", payment_hash="ef" * 32, amount_msat=30_000, expires_at=timezone.now(),
    )  # fmt: skip
    Credit.objects.create(balance=balance, invoice=invoice, credited_at=timezone.now())
    for cost in (21_000, 1_500):
        Sale.objects.create(balance=balance, model="qwen3", cost_msat=cost)
    Sale.objects.create(balance=balance, model="smollm2", cost_msat=1_000)

    ledger = owner_client.get("/wallet/").content.decode()
    assert (
        f"sk- key balance {balance.pk}: 2 answers of qwen3, 22.500 sat; 1 answer of smollm2, 1 sat"
        in ledger
    )
