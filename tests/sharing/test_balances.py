"""Strangers' balances: credited once, only from the node's word; reserved and settled."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.sharing import balances
from apps.sharing.balances import Paid
from apps.sharing.models import Balance, Credit
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import household_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def buyer(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "buyer", alias="buyer") as node:
        yield node


@pytest.fixture
def seller(tmp_path: Path, buyer: LightningdDouble, settings: Any) -> Iterator[LightningdDouble]:
    yield from household_node(tmp_path, buyer, settings, "socket")


def _balance(msat: int = 21_000) -> balances.Opened:
    return balances.balance_open(Balance.Kind.L402, "ab" * 32, msat, "answers from tiny")


def test_a_balance_is_empty_until_the_node_says_its_invoice_was_paid(
    seller: LightningdDouble, buyer: LightningdDouble
) -> None:
    opened = _balance()
    assert balances.balance_credited(opened.balance) == Paid.NO
    assert balances.balance_now(opened.balance) == 0

    buyer.rpc.xpay(opened.invoice.bolt11)

    assert balances.balance_credited(opened.balance) == Paid.YES
    assert balances.balance_now(opened.balance) == 21_000


def test_an_invoice_is_credited_once_however_often_it_is_shown(
    seller: LightningdDouble, buyer: LightningdDouble
) -> None:
    opened = _balance()
    buyer.rpc.xpay(opened.invoice.bolt11)
    for _ in range(3):
        balances.balance_credited(opened.balance)
    assert balances.balance_now(opened.balance) == 21_000


def test_a_node_that_does_not_answer_is_unknown_not_unpaid(
    seller: LightningdDouble, buyer: LightningdDouble
) -> None:
    opened = _balance()
    buyer.rpc.xpay(opened.invoice.bolt11)
    seller.faults.next_call("listinvoices", "drop")

    assert balances.balance_credited(opened.balance) == Paid.UNKNOWN
    assert balances.balance_now(opened.balance) == 0
    assert balances.balance_credited(opened.balance) == Paid.YES  # asked again, it answers


def test_a_top_up_adds_only_once_it_is_paid(
    seller: LightningdDouble, buyer: LightningdDouble
) -> None:
    opened = _balance()
    buyer.rpc.xpay(opened.invoice.bolt11)
    topup = balances.topup_open(opened.balance, 5_000, "more answers")
    balances.balance_credited(opened.balance)
    assert balances.balance_now(opened.balance) == 21_000

    buyer.rpc.xpay(topup.bolt11)
    balances.balance_credited(opened.balance)
    assert balances.balance_now(opened.balance) == 26_000


def test_a_top_up_the_node_is_silent_about_is_unknown_though_its_first_was_paid(
    seller: LightningdDouble, buyer: LightningdDouble
) -> None:
    opened = _balance()
    buyer.rpc.xpay(opened.invoice.bolt11)
    balances.balance_credited(opened.balance)
    topup = balances.topup_open(opened.balance, 5_000, "more answers")
    buyer.rpc.xpay(topup.bolt11)
    credit = Credit.objects.get(invoice=topup)
    seller.faults.next_call("listinvoices", "drop")

    assert balances.credit_paid(credit) == Paid.UNKNOWN  # never "not paid": no second invoice
    assert balances.balance_now(opened.balance) == 21_000
    assert balances.credit_paid(credit) == Paid.YES
    assert balances.balance_now(opened.balance) == 26_000


def test_crediting_a_payment_renews_any_balance_for_the_token_days(
    seller: LightningdDouble, buyer: LightningdDouble, settings: Any
) -> None:
    opened = balances.balance_open(Balance.Kind.MPP, "cd" * 32, 21_000, "an answer from tiny")
    soon = timezone.now() + timedelta(hours=1)
    Balance.objects.filter(pk=opened.balance.pk).update(expires_at=soon)
    buyer.rpc.xpay(opened.invoice.bolt11)

    balances.balance_credited(opened.balance)

    opened.balance.refresh_from_db()
    credited = Credit.objects.get(balance=opened.balance).credited_at
    assert credited is not None
    assert opened.balance.expires_at == credited + timedelta(days=settings.SHARING_TOKEN_DAYS)


def test_a_reservation_never_takes_more_than_the_balance_and_settling_gives_back_the_rest(
    seller: LightningdDouble, buyer: LightningdDouble
) -> None:
    opened = _balance()
    buyer.rpc.xpay(opened.invoice.bolt11)
    balances.balance_credited(opened.balance)

    assert balances.reserve(opened.balance, 20_000)
    assert not balances.reserve(opened.balance, 2_000)  # 1,000 left
    balances.settle(opened.balance, 20_000, 7_000)
    assert balances.balance_now(opened.balance) == 14_000


def test_an_expired_balance_cannot_be_spent(
    seller: LightningdDouble, buyer: LightningdDouble
) -> None:
    opened = _balance()
    buyer.rpc.xpay(opened.invoice.bolt11)
    balances.balance_credited(opened.balance)
    Balance.objects.filter(pk=opened.balance.pk).update(expires_at="2020-01-01T00:00:00Z")

    assert not balances.reserve(opened.balance, 1)
