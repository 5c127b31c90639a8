"""50 payers at once against one budget, in real threads with their own database connections."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from apps.wallet import budgets
from apps.wallet.models import Payment

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
