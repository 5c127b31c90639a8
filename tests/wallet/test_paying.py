"""Paying through the journal against lightningd doubles: the checks, the proof, never twice."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from apps.wallet import budgets, services
from apps.wallet.models import Payment
from apps.wallet.services import PaymentRefused, PayOrder
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import invoice

pytestmark = pytest.mark.django_db


def order(bolt11: str, purpose: str = "report", max_msat: int = 100_000, **extra: Any) -> PayOrder:
    return PayOrder(bolt11=bolt11, purpose=purpose, caller="test", max_amount_msat=max_msat,
                    **extra)  # fmt: skip


def pays_on(node: LightningdDouble) -> list[dict[str, Any]]:
    return node.rpc.listpays()["pays"]  # type: ignore[no-any-return]


def test_a_payment_completes_with_a_proof_anyone_can_check(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = invoice(payee, 21_000)

    payment = services.pay(order(made["bolt11"]))

    assert payment.state == Payment.State.COMPLETE
    assert hashlib.sha256(bytes.fromhex(payment.preimage)).hexdigest() == made["payment_hash"]
    assert payment.proof_holds and payment.fee_msat == 0
    assert (
        payee.rpc.listinvoices(payment_hash=made["payment_hash"])["invoices"][0]["status"] == "paid"
    )
    assert pays_on(node)[0]["label"] == "sovereign:report"


def test_the_same_purpose_again_returns_the_first_payment_and_pays_nothing_more(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    bolt11 = invoice(payee, 21_000)["bolt11"]
    first = services.pay(order(bolt11))

    again = services.pay(order(bolt11))

    assert again.pk == first.pk and again.amount_msat == 21_000
    assert len(pays_on(node)) == 1


def test_the_same_purpose_with_another_invoice_is_refused_saying_so(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    first = services.pay(order(invoice(payee, 21_000)["bolt11"]))
    other = invoice(payee, 5_000)

    with pytest.raises(PaymentRefused, match="'report' was already used for another invoice"):
        services.pay(order(other["bolt11"]))

    assert list(Payment.objects.values_list("pk", flat=True)) == [first.pk]
    assert [p["payment_hash"] for p in pays_on(node)] == [first.payment_hash]
    assert (
        payee.rpc.listinvoices(payment_hash=other["payment_hash"])["invoices"][0]["status"]
        == "unpaid"
    )


def refusal(node: LightningdDouble, pay: PayOrder, says: str) -> None:
    with pytest.raises(PaymentRefused, match=says):
        services.pay(pay)
    assert not Payment.objects.exists()
    assert pays_on(node) == []


def test_a_malformed_invoice_is_refused(node: LightningdDouble) -> None:
    refusal(node, order("lnbcrt1garbage"), "does not decode")


def test_an_expired_invoice_is_refused(node: LightningdDouble, payee: LightningdDouble) -> None:
    made = invoice(payee, 21_000, expiry=1)
    time.sleep(1.1)
    refusal(node, order(made["bolt11"]), "expired")


def test_an_amountless_invoice_is_refused(node: LightningdDouble, payee: LightningdDouble) -> None:
    refusal(node, order(invoice(payee, "any")["bolt11"]), "no amount")


def test_an_invoice_over_the_agreed_price_is_refused(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    refusal(node, order(invoice(payee, 21_000)["bolt11"], max_msat=20_999), "more than the")


def test_an_invoice_for_another_network_is_refused(node: LightningdDouble, tmp_path: Path) -> None:
    with LightningdDouble(tmp_path / "mainnet", network="bitcoin") as elsewhere:
        made = invoice(elsewhere, 21_000)
    refusal(node, order(made["bolt11"]), "another network")


def test_a_payment_over_a_budget_is_refused_and_nothing_is_reserved(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    budgets.budget_set("household", "day", 25_000)
    services.pay(order(invoice(payee, 15_000)["bolt11"], purpose="first", max_fee_msat=1_000))

    refusal_of = invoice(payee, 10_000)["bolt11"]  # with its fee limit, more than is left
    with pytest.raises(PaymentRefused, match="10000 msat left; this payment could cost 11000"):
        services.pay(order(refusal_of, purpose="second", max_fee_msat=1_000))
    assert Payment.objects.count() == 1 and len(pays_on(node)) == 1


def test_the_price_limit_per_payment_counts_the_maximum_fee(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    budgets.budget_set("request", "each", 10_000)

    refusal(node, order(invoice(payee, 9_000)["bolt11"], max_fee_msat=1_001), "price limit")


def test_without_a_node_paying_is_refused_saying_so(settings: Any, payee: LightningdDouble) -> None:
    settings.LIGHTNING_RPC = ""
    with pytest.raises(PaymentRefused, match="No Lightning node is connected"):
        services.pay(order(invoice(payee, 1_000)["bolt11"]))
    assert not Payment.objects.exists()


def test_a_members_allowance_holds_for_them_and_not_for_others(
    node: LightningdDouble, payee: LightningdDouble, member: Any, owner: Any
) -> None:
    budgets.budget_set("member", "week", 10_000, member=member)

    with pytest.raises(PaymentRefused, match="allowance of 10000 msat"):
        services.pay(order(invoice(payee, 9_500)["bolt11"], member=member, max_fee_msat=1_000))
    owners = services.pay(order(invoice(payee, 9_500)["bolt11"], member=owner, max_fee_msat=1_000))

    assert owners.state == "complete" and Payment.objects.count() == 1
