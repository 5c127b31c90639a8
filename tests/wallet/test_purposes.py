"""One invoice, several purposes: the node pays it once, and the journal says so.

A row is settled only by the node's records carrying its own label, and an invoice pending or
paid under one purpose is refused under any other before anything is reserved. Whatever a
caller does, the journal's paid total is what the node's `listpays` says Sovereign sent.
"""

from __future__ import annotations

import importlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.db import connection

from apps.wallet import budgets, services
from apps.wallet.models import Payment
from apps.wallet.services import PaymentRefused, PayOrder
from tests.instances import wait_for
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import invoice

AMOUNT = 14_000
PURPOSES = 5


def order(bolt11: str, purpose: str) -> PayOrder:
    return PayOrder(
        bolt11=bolt11, purpose=purpose, caller="test", max_amount_msat=AMOUNT, max_fee_msat=1_000
    )


def journal_paid_msat() -> int:
    complete = Payment.objects.filter(state=Payment.State.COMPLETE)
    return sum(p.amount_msat + (p.fee_msat or 0) for p in complete)


def node_sent_msat(node: LightningdDouble, labels: str = "sovereign:") -> int:
    """What the node's own records say it sent for Sovereign's labels."""
    pays = node.rpc.listpays()["pays"]
    return sum(
        p["amount_sent_msat"]
        for p in pays
        if p["status"] == "complete" and str(p.get("label", "")).startswith(labels)
    )


@pytest.mark.django_db
def test_one_invoice_under_a_second_purpose_is_refused_naming_the_first(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    household = budgets.budget_set("household", "day", 100_000)
    bolt11 = invoice(payee, AMOUNT)["bolt11"]
    first = services.pay(order(bolt11, "A"))

    with pytest.raises(PaymentRefused, match="already paid under the purpose 'A'"):
        services.pay(order(bolt11, "B"))

    assert first.state == "complete"
    assert list(Payment.objects.values_list("purpose", "state")) == [("A", "complete")]
    assert journal_paid_msat() == node_sent_msat(node) == AMOUNT
    assert budgets.remaining(household) == 100_000 - AMOUNT


@pytest.mark.django_db(transaction=True)
def test_five_purposes_paying_one_invoice_at_once_pay_it_once(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    bolt11 = invoice(payee, AMOUNT)["bolt11"]
    start = threading.Barrier(PURPOSES)

    def pay(n: int) -> str:
        start.wait()
        try:
            return services.pay(order(bolt11, f"parallel-{n}")).state
        except PaymentRefused as refusal:
            assert "under the purpose 'parallel-" in str(refusal)
            return "refused"
        finally:
            connection.close()

    with ThreadPoolExecutor(PURPOSES) as pool:
        outcomes = list(pool.map(pay, range(PURPOSES)))

    assert sorted(outcomes) == ["complete"] + ["refused"] * (PURPOSES - 1)
    assert Payment.objects.count() == 1
    assert [p["status"] for p in node.rpc.listpays()["pays"]] == ["complete"]
    assert journal_paid_msat() == node_sent_msat(node) == AMOUNT


@pytest.mark.django_db(transaction=True)
def test_five_callers_paying_one_purpose_with_different_invoices_at_once_pay_once(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    invoices = [invoice(payee, AMOUNT)["bolt11"] for _ in range(PURPOSES)]
    start = threading.Barrier(PURPOSES)

    def pay(bolt11: str) -> str:
        start.wait()
        try:
            return services.pay(order(bolt11, "one-purpose")).state
        except PaymentRefused:
            return "refused"
        finally:
            connection.close()

    with ThreadPoolExecutor(PURPOSES) as pool:
        outcomes = list(pool.map(pay, invoices))

    assert sorted(outcomes) == ["complete"] + ["refused"] * (PURPOSES - 1)
    [row] = Payment.objects.all()
    assert row.purpose == "one-purpose" and row.state == "complete"
    assert [p["status"] for p in node.rpc.listpays()["pays"]] == ["complete"]
    assert journal_paid_msat() == node_sent_msat(node) == AMOUNT


@pytest.mark.django_db
def test_a_row_never_takes_the_preimage_of_a_payment_made_under_another_label(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = invoice(payee, AMOUNT)
    node.rpc.xpay(made["bolt11"], label="paid-by-hand")  # outside Sovereign

    payment = services.pay(order(made["bolt11"], "after-hand"))

    assert payment.state == "failed" and payment.preimage == ""
    assert "219" in payment.error and "paid-by-hand" in payment.error
    assert journal_paid_msat() == node_sent_msat(node) == 0


@pytest.mark.django_db
def test_an_invoice_in_flight_under_another_label_fails_at_once_and_pays_nothing(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = invoice(payee, AMOUNT)
    node.faults.next_xpay("held", reply="error")
    with pytest.raises(Exception, match="Plugin terminated"):
        node.rpc.xpay(made["bolt11"], label="in-flight-by-hand")

    payment = services.pay(order(made["bolt11"], "while-in-flight"))

    # xpay's -3 is its verdict: no waiting for the deadline, and the other label's pending
    # part is not this row's.
    assert payment.state == "failed"
    assert "(-3)" in payment.error and "still in progress" in payment.error
    node.release(made["payment_hash"])
    assert journal_paid_msat() == 0


def settled_by_the_old_code(
    purpose: str, made: dict[str, Any], payee: LightningdDouble, preimage: str
) -> Payment:
    """A row as settling by payment hash alone left it: complete, with someone's preimage."""
    return Payment.objects.create(
        purpose=purpose,
        label=f"sovereign:{purpose}",
        caller="test",
        bolt11=made["bolt11"],
        payment_hash=made["payment_hash"],
        destination=payee.node_id,
        amount_msat=AMOUNT,
        max_fee_msat=1_000,
        fee_msat=0,
        state="complete",
        preimage=preimage,
    )


def reopen_and_reconcile() -> None:
    migration = importlib.import_module(
        "apps.wallet.migrations.0002_recheck_invoices_paid_under_several_purposes"
    )
    migration.reopen(django_apps, None)
    services.reconcile()


@pytest.mark.django_db
def test_rows_settled_from_another_purposes_payment_are_rechecked(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    """What the old settling left: every purpose `complete` with the one preimage."""
    made = invoice(payee, AMOUNT)
    real = services.pay(order(made["bolt11"], "real"))
    phantom = settled_by_the_old_code("phantom", made, payee, real.preimage)
    assert journal_paid_msat() == 2 * AMOUNT  # overstated

    reopen_and_reconcile()

    real.refresh_from_db()
    phantom.refresh_from_db()
    assert (real.state, phantom.state) == ("complete", "failed")
    assert journal_paid_msat() == node_sent_msat(node) == AMOUNT


@pytest.mark.django_db
def test_a_reopened_row_whose_node_has_no_record_of_the_invoice_keeps_its_proof(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    """Records deleted, or another node behind the socket: which purpose paid is unknown."""
    preimage = "ab" * 32
    made = payee.rpc.invoice(AMOUNT, "never-paid-here", "a test", preimage=preimage)
    rows = [
        settled_by_the_old_code(purpose, made, payee, preimage) for purpose in ("first", "second")
    ]

    reopen_and_reconcile()

    for row in rows:
        row.refresh_from_db()
        assert (row.state, row.preimage) == ("pending", preimage)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "dressed",
    ["{}\n", "  {}\t\n", "lightning:{}", "LIGHTNING:{}", " Lightning:{}\n", "lightning:{upper}"],
)
def test_an_invoice_is_normalised_once_and_used_alike_everywhere(
    node: LightningdDouble, payee: LightningdDouble, dressed: str
) -> None:
    made = invoice(payee, AMOUNT)
    given = dressed.format(made["bolt11"], upper=made["bolt11"].upper())

    payment = services.pay(order(given, "dressed"))

    assert payment.state == "complete" and payment.bolt11 == made["bolt11"]
    [pay] = node.rpc.listpays()["pays"]
    assert pay["bolt11"] == made["bolt11"]
    assert services.pay(order(made["bolt11"], "dressed")).pk == payment.pk  # the same invoice


@pytest.mark.django_db
def test_a_failed_record_past_the_deadline_is_not_called_no_record(
    node: LightningdDouble, payee: LightningdDouble, settings: Any
) -> None:
    made = invoice(payee, AMOUNT)
    node.faults.next_xpay("held", reply="drop")

    payment = services.pay(order(made["bolt11"], "lost-answer"))
    assert payment.state == "pending"  # the answer was lost
    payee.stop()  # the HTLC cannot be delivered: the node's attempt fails
    node.release(made["payment_hash"])
    wait_for(
        lambda: node.rpc.listpays()["pays"][0]["status"] == "failed", 30, "the attempt to fail"
    )
    assert services.settle(payment).state == "pending"  # before the deadline: still unsure

    deadline = 2 * settings.LIGHTNING_PAY_SECONDS + services.DEADLINE_MARGIN
    Payment.objects.filter(pk=payment.pk).update(
        created_at=payment.created_at - timedelta(seconds=deadline + 1)
    )
    payment.refresh_from_db()
    settled = services.settle(payment)

    assert settled.state == "failed"
    assert "no record" not in settled.error
    assert "every attempt failed" in settled.error
