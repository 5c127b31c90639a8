"""Two doubles pay each other: invoices settle, payments are recorded, balances move."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pyln.client import RpcError

from tests.lightningd import LightningdDouble, RoutingFee


def _spendable(node: LightningdDouble) -> int:
    return int(node.rpc.listpeerchannels()["channels"][0]["spendable_msat"])


def _receivable(node: LightningdDouble) -> int:
    return int(node.rpc.listpeerchannels()["channels"][0]["receivable_msat"])


def test_the_payer_gets_a_preimage_that_proves_payment(
    payer: LightningdDouble, payee: LightningdDouble
) -> None:
    invoice = payee.rpc.invoice(21_000, "coffee", "a coffee")

    paid = payer.rpc.xpay(invoice["bolt11"], label="sovereign:1")

    preimage = bytes.fromhex(paid["payment_preimage"])
    assert hashlib.sha256(preimage).hexdigest() == invoice["payment_hash"]
    [pay] = payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"]
    assert (pay["status"], pay["preimage"], pay["label"]) == (
        "complete",
        paid["payment_preimage"],
        "sovereign:1",
    )
    [part] = payer.rpc.listsendpays(payment_hash=invoice["payment_hash"])["payments"]
    assert (part["status"], part["partid"], part["payment_preimage"]) == (
        "complete",
        1,
        paid["payment_preimage"],
    )


def test_the_payees_invoice_shows_paid(payer: LightningdDouble, payee: LightningdDouble) -> None:
    invoice = payee.rpc.invoice(21_000, "coffee", "a coffee")

    paid = payer.rpc.xpay(invoice["bolt11"])

    [listed] = payee.rpc.listinvoices(label="coffee")["invoices"]
    assert listed["status"] == "paid"
    assert listed["amount_received_msat"] == 21_000
    assert listed["payment_preimage"] == paid["payment_preimage"]
    assert listed["paid_at"] >= listed["expires_at"] - 604800
    assert payee.rpc.waitanyinvoice(0, 1)["label"] == "coffee"


def test_balances_move_by_the_amount(payer: LightningdDouble, payee: LightningdDouble) -> None:
    # Past the payee's 1% channel reserve first: below it, nothing is receivable back.
    payer.rpc.xpay(payee.rpc.invoice(20_000_000, "reserve", "past the reserve")["bolt11"])
    before = (_spendable(payer), _receivable(payer), _receivable(payee))
    invoice = payee.rpc.invoice(50_000, "balance", "moves balances")

    payer.rpc.xpay(invoice["bolt11"])

    assert _spendable(payer) == before[0] - 50_000
    assert _receivable(payer) == before[1] + 50_000
    assert _receivable(payee) == before[2] - 50_000
    funds = payer.rpc.listfunds()["channels"][0]
    assert funds["our_amount_msat"] == 1_000_000_000 - 20_050_000


def test_a_routing_fee_is_paid_on_top_and_reported(tmp_path: Path, payee: LightningdDouble) -> None:
    fee = RoutingFee(base_msat=1000, ppm=1000)
    with LightningdDouble(tmp_path / "routed", routing_fee=fee) as payer:
        payer.connect(payee)
        before = _spendable(payer)
        invoice = payee.rpc.invoice(2_000_000, "routed", "through a hop")

        paid = payer.rpc.xpay(invoice["bolt11"])

        assert paid["amount_sent_msat"] - paid["amount_msat"] == 1000 + 2000
        assert _spendable(payer) == before - 2_003_000
        [pay] = payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"]
        assert pay["amount_sent_msat"] == 2_003_000


def test_a_fee_above_maxfee_is_refused_and_nothing_sent(
    tmp_path: Path, payee: LightningdDouble
) -> None:
    with LightningdDouble(tmp_path / "routed", routing_fee=RoutingFee(base_msat=10)) as payer:
        payer.connect(payee)
        invoice = payee.rpc.invoice(1000, "dear", "costs a fee")

        with pytest.raises(RpcError) as refused:
            payer.rpc.xpay(invoice["bolt11"], maxfee=9)

        assert refused.value.error == {
            "code": 206,
            "message": "Failed: Could not find route without excessive cost",
        }
        assert payer.rpc.listsendpays(payment_hash=invoice["payment_hash"])["payments"] == []


def test_beyond_what_can_be_spent_is_no_route(
    payer: LightningdDouble, payee: LightningdDouble
) -> None:
    invoice = payee.rpc.invoice(990_000_000, "too-much", "more than spendable")

    with pytest.raises(RpcError) as refused:
        payer.rpc.xpay(invoice["bolt11"])

    assert refused.value.error["code"] == 205
    assert refused.value.error["message"].endswith(
        "layer auto.localchans says max is 985709000msat"
    )
    assert payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"] == []


def test_payments_go_both_ways(payer: LightningdDouble, payee: LightningdDouble) -> None:
    payer.rpc.xpay(payee.rpc.invoice(20_000_000, "there", "there")["bolt11"])
    back = payer.rpc.invoice(5_000_000, "back", "and back")

    payee.rpc.xpay(back["bolt11"])

    assert payer.rpc.listinvoices(label="back")["invoices"][0]["status"] == "paid"
    assert payee.rpc.listpeerchannels()["channels"][0]["to_us_msat"] == 15_000_000


def test_an_invoice_from_a_stranger_is_unknown_destination(
    tmp_path: Path, payer: LightningdDouble
) -> None:
    with LightningdDouble(tmp_path / "stranger") as stranger:
        invoice = stranger.rpc.invoice(1000, "far", "no channel to it")

        with pytest.raises(RpcError) as refused:
            payer.rpc.xpay(invoice["bolt11"])

    assert refused.value.error == {
        "code": 205,
        "message": f"Failed: Unknown destination node {stranger.node_id}",
    }


def test_a_node_can_pay_its_own_invoice(payee: LightningdDouble) -> None:
    invoice = payee.rpc.invoice(1000, "self", "to myself")

    payee.rpc.xpay(invoice["bolt11"])

    assert payee.rpc.listinvoices(label="self")["invoices"][0]["status"] == "paid"


def test_legacy_pay_answers_with_pays_fields(
    payer: LightningdDouble, payee: LightningdDouble
) -> None:
    invoice = payee.rpc.invoice(4000, "legacy", "by pay")

    paid = payer.rpc.pay(invoice["bolt11"], label="old-style")

    assert paid["status"] == "complete"
    assert paid["destination"] == payee.node_id
    assert paid["payment_hash"] == invoice["payment_hash"]
    assert (
        payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"][0]["label"] == "old-style"
    )


def test_a_restarted_node_is_the_same_node(
    tmp_path: Path, payer: LightningdDouble, payee: LightningdDouble
) -> None:
    invoice = payee.rpc.invoice(5000, "kept", "survives a restart")
    paid = payer.rpc.xpay(invoice["bolt11"])
    payer.stop()

    with LightningdDouble(tmp_path / "payer") as again:
        assert again.node_id == payer.node_id
        [pay] = again.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"]
        assert pay["preimage"] == paid["payment_preimage"]
        assert again.rpc.listpeerchannels()["channels"][0]["to_us_msat"] == 1_000_000_000 - 5000


def test_a_used_label_and_a_used_preimage_are_refused(payee: LightningdDouble) -> None:
    preimage = "11" * 32
    payee.rpc.invoice(1000, "once", "first", preimage=preimage)

    with pytest.raises(RpcError) as label:
        payee.rpc.invoice(1000, "once", "again")
    with pytest.raises(RpcError) as reused:
        payee.rpc.invoice(1000, "twice", "same preimage", preimage=preimage)

    assert label.value.error == {"code": 900, "message": "Duplicate label 'once'"}
    assert reused.value.error == {"code": 901, "message": "preimage already used"}
