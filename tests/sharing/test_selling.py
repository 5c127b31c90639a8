"""A sold answer, with the real engine: the most it may cost reserved first, then charged what it
used (per request, or per 1,000 tokens), the rest given back; a stranger's request is one user,
the strangers, to the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from apps.identity.models import Member, Role
from apps.inference.answering import Sampling
from apps.inference.backends.base import Done, Failed, RefusalCode, Token, primed
from apps.inference.engine_protocol import STRANGERS
from apps.sharing import selling
from apps.sharing.models import Balance, Offer, Sale
from tests.inference.conftest import RecordingDecoder, bundled_local_model, serving_engine

pytestmark = pytest.mark.django_db(transaction=True)
SAMPLING = Sampling(max_tokens=8, temperature=0.0, top_p=1.0, seed=1)
QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingDecoder]:
    with serving_engine() as decoder:
        yield decoder


@pytest.fixture
def on_sale(engine: RecordingDecoder) -> str:
    Member.objects.create_user(pubkey="cd" * 32, role=Role.OWNER)
    return bundled_local_model().name


def _balance(msat: int) -> Balance:
    return Balance.objects.create(
        kind=Balance.Kind.L402, token_id="ef" * 32, balance_msat=msat,
        expires_at="2100-01-01T00:00:00Z",
    )  # fmt: skip


def _read(balance: Balance, offer: Offer, *, stop_after: int | None = None) -> list[Any]:
    async def read() -> list[Any]:
        sold = await selling.sold_answer(balance, offer, QUESTION, SAMPLING)
        events = []
        async for event in sold.events:
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
        await sold.events.aclose()
        return events

    return async_to_sync(read)()


def _left(balance: Balance) -> int:
    balance.refresh_from_db()
    return balance.balance_msat


def test_a_request_priced_per_request_is_charged_its_price(on_sale: str) -> None:
    offer = Offer.objects.create(model=on_sale, price_msat=3_000)
    balance = _balance(10_000)

    events = _read(balance, offer)

    done = events[-1]
    assert isinstance(done, Done)
    assert done.provenance["cost_msat"] == 3_000
    assert done.provenance["balance_msat"] == 7_000 == _left(balance)
    sale = Sale.objects.get()
    assert (sale.model, sale.cost_msat) == (on_sale, 3_000)
    assert sale.completion_tokens == done.usage.completion_tokens > 0


def test_a_request_priced_per_1000_tokens_is_charged_what_it_used(on_sale: str) -> None:
    offer = Offer.objects.create(
        model=on_sale, price_msat=1_000, per_1k_tokens=True, max_request_msat=50_000
    )
    balance = _balance(60_000)

    done = _read(balance, offer)[-1]

    used = done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.provenance["cost_msat"] == used  # 1 msat a token, rounded up
    assert _left(balance) == 60_000 - used


def test_a_balance_short_of_the_most_a_request_may_cost_is_refused_and_untouched(
    on_sale: str,
) -> None:
    offer = Offer.objects.create(model=on_sale, price_msat=3_000)
    balance = _balance(2_999)

    with pytest.raises(selling.BalanceShort) as short:
        _read(balance, offer)

    assert (short.value.balance_msat, short.value.required_msat) == (2_999, 3_000)
    assert _left(balance) == 2_999
    assert not Sale.objects.exists()


def test_an_answer_left_before_its_end_is_charged_its_prompt_and_the_tokens_sent(
    on_sale: str,
) -> None:
    offer = Offer.objects.create(
        model=on_sale, price_msat=1_000, per_1k_tokens=True, max_request_msat=50_000
    )
    balance = _balance(50_000)

    events = _read(balance, offer, stop_after=3)

    assert all(isinstance(event, Token) for event in events)
    sale = Sale.objects.get()
    # The engine reported no usage: the prompt is estimated (its characters over four).
    assert sale.prompt_tokens == len("Name a colour.") // 4 > 0
    assert sale.completion_tokens >= 1
    assert sale.cost_msat == sale.prompt_tokens + sale.completion_tokens  # 1 msat a token
    assert _left(balance) == 50_000 - sale.cost_msat


def _sold(events: list[Any], reserved: int) -> selling.Sold:
    async def given() -> Any:
        for event in events:
            yield event

    return selling.Sold(given(), reserved, prompt_estimate=7)


def _charged(sold: selling.Sold, balance: Balance, offer: Offer) -> list[Any]:
    async def read() -> list[Any]:
        events = await primed(selling._charged(sold, balance, offer))
        return [event async for event in events]

    return async_to_sync(read)()


def test_an_answer_broken_off_after_tokens_is_charged_as_one_cut_short(on_sale: str) -> None:
    offer = Offer.objects.create(
        model=on_sale, price_msat=1_000, per_1k_tokens=True, max_request_msat=50_000
    )
    balance = _balance(50_000 - 400)  # 400 reserved
    failed = Failed(RefusalCode.ENGINE_BROKEN, "the engine stopped")
    sold = _sold([Token("Bl"), Token("ue"), failed], reserved=400)

    assert _charged(sold, balance, offer)[-1] == failed

    sale = Sale.objects.get()
    assert (sale.prompt_tokens, sale.completion_tokens, sale.cost_msat) == (7, 2, 9)
    assert _left(balance) == 50_000 - 9


def test_an_answer_broken_off_before_any_token_costs_nothing(on_sale: str) -> None:
    offer = Offer.objects.create(
        model=on_sale, price_msat=1_000, per_1k_tokens=True, max_request_msat=50_000
    )
    balance = _balance(50_000 - 400)
    sold = _sold([Failed(RefusalCode.ENGINE_BROKEN, "the engine stopped")], reserved=400)

    _charged(sold, balance, offer)

    assert not Sale.objects.exists() and _left(balance) == 50_000


def test_the_sale_records_what_was_kept_never_more_than_was_reserved(on_sale: str) -> None:
    offer = Offer.objects.create(
        model=on_sale, price_msat=1_000, per_1k_tokens=True, max_request_msat=50_000
    )
    balance = _balance(50_000 - 400)
    sold = selling.Sold(_sold([], 400).events, 400)

    shown = selling._sale_shown(sold, balance, offer, 900, 100)  # 1,000 msat used

    sale = Sale.objects.get()
    assert sale.cost_msat == shown["cost_msat"] == 400 == _left_spent(balance)
    assert json.loads(shown["receipt"]["content"])["amount_msat"] == 400


def _left_spent(balance: Balance) -> int:
    return 50_000 - _left(balance)


def test_the_engine_counts_every_stranger_as_one_user_and_shares_no_cache_with_them(
    on_sale: str, engine: RecordingDecoder
) -> None:
    offer = Offer.objects.create(model=on_sale, price_msat=1)
    buyer = _balance(10)
    _read(buyer, offer)
    _read(buyer, offer)
    other = Balance.objects.create(
        kind=Balance.Kind.KEY, token_id="12" * 32, balance_msat=10, expires_at=buyer.expires_at
    )
    _read(other, offer)

    first, again, another = engine.jobs[-3:]
    assert first.user == again.user == another.user == STRANGERS
    assert first.cache_group == again.cache_group == f"sale:balance:{buyer.pk}"  # its own
    assert another.cache_group == f"sale:balance:{other.pk}"  # never another buyer's
