"""Invoices made by the household's node, learned paid from listinvoices; the pages with a node."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.system.services import lightning_component
from apps.wallet import services
from apps.wallet.models import Invoice
from apps.wallet.services import PaymentRefused, PayOrder
from tests.lightningd import LightningdDouble

pytestmark = pytest.mark.django_db


def test_an_invoice_is_made_and_learned_paid(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = services.invoice_create(
        15_000, "a summary for a friend", purpose="sale-1", caller="friend:2"
    )
    assert services.invoices_sync() == 0

    paid = payee.rpc.xpay(made.bolt11)  # the payee double pays back over the same channel
    assert services.invoices_sync() == 1

    made.refresh_from_db()
    assert (made.state, made.amount_received_msat) == (Invoice.State.PAID, 15_000)
    assert made.preimage == paid["payment_preimage"] and made.paid_at is not None


def test_an_invoice_the_node_no_longer_lists_is_unknown_not_unpaid(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    made = services.invoice_create(15_000, "a summary", purpose="sale-2", caller="friend:2")
    payee.rpc.xpay(made.bolt11)
    with node.node.lock:  # autoclean deletes it (paid invoices too, after autoclean's age)
        node.node.state.invoices = [i for i in node.node.state.invoices if i.label != made.label]

    assert services.invoice_state_now(made) is None
    made.refresh_from_db()
    assert made.state == Invoice.State.UNPAID  # nothing settled from silence


def test_the_same_purpose_gives_the_same_invoice(node: LightningdDouble) -> None:
    first = services.invoice_create(15_000, "x", purpose="sale-2", caller="friend:2")
    again = services.invoice_create(15_000, "x", purpose="sale-2", caller="friend:2")

    assert again.pk == first.pk
    assert len(node.rpc.listinvoices()["invoices"]) == 1


def test_the_same_purpose_with_other_terms_is_refused(node: LightningdDouble) -> None:
    services.invoice_create(15_000, "x", purpose="sale-2", caller="friend:2")

    with pytest.raises(PaymentRefused, match=r"already has an invoice for 15000 msat \('x'\)"):
        services.invoice_create(99_000, "y", purpose="sale-2", caller="friend:2")
    assert len(node.rpc.listinvoices()["invoices"]) == 1


def test_an_invoice_the_node_made_before_a_crash_is_taken_up(node: LightningdDouble) -> None:
    node.rpc.invoice(15_000, "sovereign:sale-3", "made, then the process died")

    taken = services.invoice_create(
        15_000, "made, then the process died", purpose="sale-3", caller="friend:2"
    )

    assert taken.bolt11 == node.rpc.listinvoices(label="sovereign:sale-3")["invoices"][0]["bolt11"]
    assert taken.amount_msat == 15_000


@pytest.mark.parametrize(
    ("amount", "description", "says"),
    [
        (99_000, "a different summary", "for 5000 msat \\('a summary'\\), not 99000 msat"),
        (5_000, "a different summary", "not 5000 msat \\('a different summary'\\)"),
    ],
)
def test_a_node_invoice_with_other_terms_under_our_label_is_not_taken_up(
    node: LightningdDouble, amount: int, description: str, says: str
) -> None:
    node.rpc.invoice(5_000, "sovereign:sale-x", "a summary")  # what a crash leaves behind

    with pytest.raises(PaymentRefused, match=says):
        services.invoice_create(amount, description, purpose="sale-x", caller="friend:2")

    assert not Invoice.objects.exists()
    assert len(node.rpc.listinvoices()["invoices"]) == 1


def test_an_invoice_without_an_amount_is_refused(node: LightningdDouble) -> None:
    with pytest.raises(PaymentRefused, match="at least 1 msat"):
        services.invoice_create(0, "free", purpose="sale-4", caller="friend:2")
    assert not Invoice.objects.exists()


def test_the_pages_show_the_node(
    node: LightningdDouble, payee: LightningdDouble, owner_client: Client
) -> None:
    bolt11 = payee.rpc.invoice(21_000, "shown", "shown")["bolt11"]
    services.pay(PayOrder(bolt11=bolt11, purpose="shown", caller="test", max_amount_msat=21_000))

    page = owner_client.get("/wallet/").content.decode()

    assert node.node_id in page and "regtest" in page and "holds" in page
    component = lightning_component()
    assert component.state == "up" and node.node_id[:12] in component.detail
    assert "on regtest, 1 channel(s)" in component.detail and "sat to receive" in component.detail


def test_a_node_that_stopped_shows_down(node: LightningdDouble, settings: Any) -> None:
    node.stop()

    assert lightning_component().state == "down"
