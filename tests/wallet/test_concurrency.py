"""50 payers at once against one budget, in real threads with their own database connections."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from apps.wallet import budgets, services
from apps.wallet.models import Payment
from apps.wallet.services import PayOrder
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import invoice

pytestmark = pytest.mark.usefixtures("database")  # on SQLite, then on PostgreSQL
PAYERS = 50
AMOUNT, MAX_FEE = 7_000, 1_000
CAP = 100_000  # room for 12 of them at 8,000 msat each


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reservations_never_pass_the_cap() -> None:
    budgets.budget_set("household", "day", CAP)
    start = threading.Barrier(PAYERS)

    def reserve(n: int) -> bool:
        start.wait()
        try:
            budgets.reserve(
                purpose=f"race-{n}", label=f"sovereign:race-{n}", caller="test",
                bolt11="lnbcrt...", payment_hash=hashlib.sha256(os.urandom(32)).hexdigest(),
                destination="", amount_msat=AMOUNT, max_fee_msat=MAX_FEE,
            )  # fmt: skip
            return True
        except budgets.OverBudget:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(PAYERS) as pool:
        reserved = sum(pool.map(reserve, range(PAYERS)))

    assert reserved == CAP // (AMOUNT + MAX_FEE) == Payment.objects.count()
    assert budgets.committed(budgets.Q(), None) <= CAP


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_payers_through_the_node_never_spend_past_the_cap(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    household = budgets.budget_set("household", "day", CAP)
    bolt11s = [invoice(payee, AMOUNT)["bolt11"] for _ in range(PAYERS)]
    start = threading.Barrier(PAYERS)

    def pay(n: int) -> str:
        start.wait()
        order = PayOrder(bolt11=bolt11s[n], purpose=f"payer-{n}", caller=f"agent:{n}",
                         max_amount_msat=AMOUNT, max_fee_msat=MAX_FEE)  # fmt: skip
        try:
            return services.pay(order).state
        except services.PaymentRefused:
            return "refused"
        finally:
            connection.close()

    with ThreadPoolExecutor(PAYERS) as pool:
        outcomes = list(pool.map(pay, range(PAYERS)))

    paid = [p for p in node.rpc.listpays()["pays"] if p["status"] == "complete"]
    spent = sum(p["amount_sent_msat"] for p in paid)
    # Each reserves 8,000 msat and, paid without a fee, keeps 7,000: 12 fit at once, up to 14
    # as completed ones release their unused fee.
    assert outcomes.count("complete") == len(paid)
    assert CAP // (AMOUNT + MAX_FEE) <= len(paid) <= CAP // AMOUNT
    assert outcomes.count("refused") == PAYERS - len(paid)
    assert spent <= CAP and budgets.remaining(household) == CAP - spent
