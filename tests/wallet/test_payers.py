"""A payment made for someone else (an agent task paying a provider) counts against both caps:
the provider's (its caller) and the task's (its payer), in the same serialised reservation."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from apps.wallet import budgets, ledger, services
from apps.wallet.models import Payment
from apps.wallet.services import PayOrder
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import invoice

PROVIDER, TASK = "provider:routstr", "agent:3"
AMOUNT, MAX_FEE = 7_000, 5_000  # xpay's default fee limit for a small payment is 5 sat
NEED = AMOUNT + MAX_FEE


def agent_order(payee: LightningdDouble, step: int, payer: str = TASK) -> PayOrder:
    return PayOrder(
        bolt11=invoice(payee, AMOUNT)["bolt11"],
        purpose=f"l402:routstr:agent-3-step-{step}",
        caller=PROVIDER,
        payer=payer,
        max_amount_msat=AMOUNT,
    )


@pytest.mark.django_db(transaction=True)
def test_a_provider_cap_of_zero_refuses_an_agent_s_payment(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    budgets.budget_set("caller", "total", 1_000_000, caller=TASK)
    budgets.budget_set("caller", "day", 0, caller=PROVIDER)

    with pytest.raises(services.BudgetRefused, match="0 msat"):
        services.pay(agent_order(payee, 1))

    assert Payment.objects.count() == 0
    assert services.spendable_msat(None, PROVIDER, TASK) == 0


@pytest.mark.django_db(transaction=True)
def test_a_task_cap_refuses_a_payment_to_a_provider_with_room(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    budgets.budget_set("caller", "day", 1_000_000, caller=PROVIDER)
    budgets.budget_set("caller", "total", NEED, caller=TASK)  # room for one payment

    first = services.pay(agent_order(payee, 1))
    with pytest.raises(services.BudgetRefused):
        services.pay(agent_order(payee, 2))

    assert first.state == Payment.State.COMPLETE
    assert (first.caller, first.payer) == (PROVIDER, TASK)
    assert Payment.objects.count() == 1
    # Another task paying the same provider is not held back by this task's cap.
    other = services.pay(agent_order(payee, 3, payer="agent:4"))
    assert other.state == Payment.State.COMPLETE


@pytest.mark.django_db(transaction=True)
def test_one_agent_payment_counts_against_both_caps(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    provider_cap = budgets.budget_set("caller", "day", 100_000, caller=PROVIDER)
    task_cap = budgets.budget_set("caller", "total", 50_000, caller=TASK)

    paid = services.pay(agent_order(payee, 1))

    cost = paid.amount_msat + (paid.fee_msat or 0)
    assert budgets.remaining(provider_cap) == 100_000 - cost
    assert budgets.remaining(task_cap) == 50_000 - cost
    assert budgets.committed(budgets.caller_scope(TASK), None) == cost
    assert budgets.committed(budgets.caller_scope(PROVIDER), None) == cost
    # Before the next step is sent, the tighter of the two is what is left.
    assert services.spendable_msat(None, PROVIDER, TASK) == 50_000 - cost
    assert services.spendable_msat(None, PROVIDER) == 100_000 - cost
    # The ledger says who caused it: the provider, for the task.
    assert ledger.entries()[0].caused_by == f"{PROVIDER} for {TASK}"


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_agent_payers_never_pass_the_provider_s_cap() -> None:
    """Fifty tasks, each with room of its own, race for one provider's cap: the provider's cap
    holds, because every payment counts against it whichever task pays."""
    payers, cap = 50, 10 * NEED
    budgets.budget_set("caller", "day", cap, caller=PROVIDER)
    for n in range(payers):
        budgets.budget_set("caller", "total", 2 * NEED, caller=f"agent:{n}")
    start = threading.Barrier(payers)

    def reserve(n: int) -> bool:
        start.wait()
        try:
            budgets.reserve(
                purpose=f"race-{n}", label=f"sovereign:race-{n}", caller=PROVIDER,
                payer=f"agent:{n}", bolt11="lnbcrt...",
                payment_hash=hashlib.sha256(os.urandom(32)).hexdigest(), destination="",
                amount_msat=AMOUNT, max_fee_msat=MAX_FEE,
            )  # fmt: skip
            return True
        except budgets.OverBudget:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(payers) as pool:
        reserved = sum(pool.map(reserve, range(payers)))

    assert reserved == 10 == Payment.objects.count()
    assert budgets.committed(budgets.caller_scope(PROVIDER), None) == cap
