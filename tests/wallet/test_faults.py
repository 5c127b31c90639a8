"""Every fault of the lightningd double, survived: unknown outcomes stay pending until the node's
records decide them, nothing is paid twice, and a failure releases what was reserved."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from apps.wallet import budgets, services
from apps.wallet.models import Payment
from apps.wallet.services import PayOrder
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import household_node, invoice

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["socket", "clnrest"])
def node(
    request: pytest.FixtureRequest, tmp_path: Path, payee: LightningdDouble, settings: Any
) -> Iterator[LightningdDouble]:
    """Every fault over both ways to the node: what is unknown stays unknown over either."""
    yield from household_node(tmp_path, payee, settings, request.param)


AMOUNT = 21_000


def pay(payee: LightningdDouble, purpose: str = "report") -> Payment:
    bolt11 = invoice(payee, AMOUNT)["bolt11"]
    order = PayOrder(bolt11=bolt11, purpose=purpose, caller="test", max_amount_msat=AMOUNT,
                     max_fee_msat=1_000)  # fmt: skip
    return services.pay(order)


def settle_until_final(payment: Payment, seconds: float = 10) -> list[str]:
    """The states the reconciler goes through until the payment is final."""
    seen = [payment.state]
    deadline = time.monotonic() + seconds
    while payment.state == Payment.State.PENDING and time.monotonic() < deadline:
        payment = services.settle(payment)
        seen.append(payment.state)
        time.sleep(0.05)
    return seen


def paid_once(node: LightningdDouble, payee: LightningdDouble) -> None:
    assert [p["status"] for p in node.rpc.listpays()["pays"]] == ["complete"]
    [paid] = payee.rpc.listinvoices()["invoices"]
    assert paid["status"] == "paid" and paid["amount_received_msat"] == AMOUNT


@pytest.mark.parametrize("reply", ["wait", "error", "drop"])
def test_pending_then_complete(node: LightningdDouble, payee: LightningdDouble, reply: str) -> None:
    node.faults.next_xpay("pending_then_complete", after=0.5, reply=reply)

    payment = pay(payee)

    assert settle_until_final(payment)[-1] == "complete"
    assert Payment.objects.get().proof_holds
    paid_once(node, payee)


@pytest.mark.parametrize("reply", ["wait", "error", "drop"])
def test_failed_while_still_retrying_is_not_taken_as_failed(
    node: LightningdDouble, payee: LightningdDouble, reply: str
) -> None:
    node.faults.next_xpay("failed_then_complete", pending_for=0.2, failed_for=1.0, reply=reply)

    payment = pay(payee)
    states = settle_until_final(payment)

    assert "failed" not in states and states[-1] == "complete"
    paid_once(node, payee)


def test_already_paid_takes_the_proof_from_the_nodes_records(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    node.faults.next_xpay("already_paid")

    payment = pay(payee)

    assert payment.state == "complete" and payment.proof_holds
    paid_once(node, payee)


@pytest.mark.parametrize("fault", ["no_route", "expired"])
def test_a_refused_payment_fails_and_releases_its_reservation(
    node: LightningdDouble, payee: LightningdDouble, fault: str
) -> None:
    household = budgets.budget_set("household", "day", 100_000)
    node.faults.next_xpay(fault)

    payment = pay(payee)

    assert payment.state == "failed"
    assert ("20" if fault == "no_route" else "207") in payment.error
    assert budgets.remaining(household) == 100_000
    assert payee.rpc.listinvoices()["invoices"][0]["status"] == "unpaid"


def backdate(payment: Payment, seconds: float) -> Payment:
    Payment.objects.filter(pk=payment.pk).update(
        created_at=payment.created_at - timedelta(seconds=seconds)
    )
    payment.refresh_from_db()
    return payment


def test_a_dropped_socket_with_nothing_paid_stays_pending_until_past_the_deadline(
    node: LightningdDouble, payee: LightningdDouble, settings: Any
) -> None:
    node.faults.next_xpay("drop", paid=False)

    payment = pay(payee)

    assert payment.state == "pending" and services.settle(payment).state == "pending"
    deadline = 2 * settings.LIGHTNING_PAY_SECONDS + services.DEADLINE_MARGIN
    assert services.settle(backdate(payment, deadline + 1)).state == "failed"
    assert node.rpc.listpays()["pays"] == []


def test_a_dropped_socket_after_paying_is_settled_as_paid(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    node.faults.next_xpay("drop", paid=True)

    payment = pay(payee)

    assert payment.state == "pending"
    assert services.reconcile() == {"complete": 1, "failed": 0, "pending": 0}
    assert Payment.objects.get().proof_holds
    paid_once(node, payee)


def test_a_slow_answer_leaves_the_payment_pending_then_the_reconciler_settles_it(
    node: LightningdDouble, payee: LightningdDouble, settings: Any, monkeypatch: Any
) -> None:
    settings.LIGHTNING_PAY_SECONDS = 1
    monkeypatch.setattr(services, "DEADLINE_MARGIN", 0)
    node.faults.next_xpay("slow", seconds=3)

    payment = pay(payee)

    assert payment.state == "pending"  # the wallet stopped waiting after a second
    assert services.reconcile()["complete"] == 1
    paid_once(node, payee)


def test_paying_again_while_the_first_is_unsettled_does_not_pay_twice(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    node.faults.next_xpay("drop", paid=True)
    bolt11 = invoice(payee, AMOUNT)["bolt11"]
    order = PayOrder(bolt11=bolt11, purpose="once", caller="test", max_amount_msat=AMOUNT)

    first, again = services.pay(order), services.pay(order)

    assert (first.pk, first.state) == (again.pk, "pending")
    services.reconcile()
    paid_once(node, payee)
