"""What the wallet writes to the audit trail: each payment when it is reserved and when it
settles, each invoice when it is issued and paid; never a preimage or a whole invoice."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.wallet import budgets, services
from apps.wallet.services import PaymentRefused, PayOrder
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import invoice

pytestmark = pytest.mark.django_db


def pay(bolt11: str, purpose: str = "a summary") -> PayOrder:
    return PayOrder(
        bolt11=bolt11,
        purpose=purpose,
        caller="member:3",
        max_amount_msat=100_000,
        max_fee_msat=1_000,
    )


def trail() -> list[tuple[str, str, str]]:
    events = AuditEvent.objects.order_by("id")
    return list(events.values_list("action", "actor", "subject"))


def test_a_payment_is_audited_when_reserved_and_when_sent(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = invoice(payee, 21_000)

    payment = services.pay(pay(made["bolt11"]))

    assert trail() == [
        ("payment_reserved", "member:3", "a summary"),
        ("payment_sent", "member:3", "a summary"),
    ]
    reserved, sent = AuditEvent.objects.order_by("id")
    hash_prefix = made["payment_hash"][:16]
    assert reserved.detail == f"21000 msat, payment hash {hash_prefix}…, fees up to 1000 msat"
    assert sent.detail == f"21000 msat, payment hash {hash_prefix}…, fee 0 msat"
    for event in (reserved, sent):
        assert payment.preimage not in event.detail and made["bolt11"] not in event.detail


def test_settling_a_payment_again_writes_no_second_row(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    payment = services.pay(pay(invoice(payee, 21_000)["bolt11"]))

    services.settle(payment)
    services.reconcile()

    assert [action for action, _, _ in trail()] == ["payment_reserved", "payment_sent"]


def test_a_failed_payment_is_audited_with_the_nodes_reason(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = invoice(payee, 21_000)
    node.faults.next_xpay("no_route")

    payment = services.pay(pay(made["bolt11"]))

    assert payment.state == payment.State.FAILED
    assert [action for action, _, _ in trail()] == ["payment_reserved", "payment_failed"]
    failed = AuditEvent.objects.get(action="payment_failed")
    assert failed.detail.startswith(f"21000 msat, payment hash {made['payment_hash'][:16]}…: ")
    assert "nothing was paid" in failed.detail and made["bolt11"] not in failed.detail


def test_a_payment_refused_over_budget_writes_nothing(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    budgets.budget_set("household", "day", 10_000)

    with pytest.raises(PaymentRefused, match="msat left"):
        services.pay(pay(invoice(payee, 21_000)["bolt11"]))

    assert trail() == []


def test_an_invoice_is_audited_when_issued_and_when_paid(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = services.invoice_create(15_000, "a summary", purpose="sale-1", caller="friend:2")
    services.invoices_sync()
    payee.rpc.xpay(made.bolt11)

    services.invoices_sync()
    services.invoices_sync()

    assert trail() == [
        ("invoice_issued", "friend:2", "sale-1"),
        ("invoice_paid", "friend:2", "sale-1"),
    ]
    paid = AuditEvent.objects.get(action="invoice_paid")
    assert paid.detail == f"15000 msat received, payment hash {made.payment_hash[:16]}…"
