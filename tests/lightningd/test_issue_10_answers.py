"""What the real node answered in issue 10's run, and the double now answers alike: an invoice
paid again while in flight, an amount above what can be spent, text that is not an invoice,
and a route hint whose fee went out of date; two hops with real fees.

The recorded answers are in `data/cln-v26.06.6-issue-10.json`, beside the main transcript.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyln.client import RpcError

from tests.lightningd import LightningdDouble
from tests.lightningd.transcript import same_message

RECORDED = Path(__file__).parent / "data" / "cln-v26.06.6-issue-10.json"


def recorded(note: str) -> dict[str, Any]:
    for entry in json.loads(RECORDED.read_text())["exchanges"]:
        if entry["note"] == note:
            return dict(entry["error"])
    raise KeyError(note)


def refusal(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(RpcError) as raised:
        call(*args, **kwargs)
    error: dict[str, Any] = raised.value.error
    return error


def answers_as_recorded(error: dict[str, Any], note: str) -> None:
    expected = recorded(note)
    assert error["code"] == expected["code"]
    # The recording writes the group id as N, as the issue does: it differs per payment.
    message = re.sub(r"groupid=\d+", "groupid=N", error["message"])
    assert same_message(expected["message"], message), error["message"]


def test_paying_an_invoice_in_flight_again_answers_minus_3_wrapping_lightningds_200(
    payer: LightningdDouble, payee: LightningdDouble
) -> None:
    invoice = payee.rpc.invoice(14_000, "in-flight", "paid twice at once")
    payer.faults.next_xpay("held", reply="error")  # the first call returns, its HTLC stays out
    first = refusal(payer.rpc.xpay, invoice["bolt11"], label="first")
    assert first["code"] == -4

    again = refusal(payer.rpc.xpay, invoice["bolt11"], label="second")

    answers_as_recorded(again, "again while the first payment is in flight")
    [part] = payer.rpc.listsendpays(payment_hash=invoice["payment_hash"])["payments"]
    assert f"groupid={part['groupid']} " in again["message"]
    payer.release(invoice["payment_hash"])
    [pay] = wait_for_status(payer, invoice["payment_hash"], "complete")
    assert pay["label"] == "first"  # the second call recorded nothing


def wait_for_status(node: LightningdDouble, payment_hash: str, status: str) -> list[Any]:
    import time

    deadline = time.monotonic() + 15
    while True:
        pays: list[Any] = node.rpc.listpays(payment_hash=payment_hash)["pays"]
        if pays and all(p["status"] == status for p in pays):
            return pays
        assert time.monotonic() < deadline, f"never {status}: {pays}"
        time.sleep(0.02)


def test_an_amount_above_what_can_be_spent_but_within_capacity_names_the_channels_limit(
    payer: LightningdDouble, payee: LightningdDouble
) -> None:
    [channel] = payer.rpc.listpeerchannels()["channels"]
    spendable = channel["spendable_msat"]
    assert spendable < 990_000_000 < channel["total_msat"]
    invoice = payee.rpc.invoice(990_000_000, "too-much", "more than can be spent")

    error = refusal(payer.rpc.xpay, invoice["bolt11"])

    answers_as_recorded(error, "above spendable, within capacity")
    scid = channel["short_channel_id"]
    assert f"path is {scid}, but {scid}/{channel['direction']} layer" in error["message"]
    assert error["message"].endswith(f"says max is {spendable}msat")
    assert payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"] == []


@pytest.mark.parametrize(("text", "note"), [("hello world", "not bech32 at all"), ("", "empty")])
def test_text_that_is_not_an_invoice_is_unparsable(
    payee: LightningdDouble, text: str, note: str
) -> None:
    error = refusal(payee.rpc.decode, text)

    assert error == recorded(note)


def test_garbage_that_looks_like_an_invoice_is_still_a_bad_bech32_string(
    payee: LightningdDouble,
) -> None:
    error = refusal(payee.rpc.decode, "lnbcrt10u1nonsense")

    assert error["message"].startswith("string: Bad bech32 string")


@pytest.fixture
def hop(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "hop", alias="hop") as node:
        yield node


@pytest.fixture
def behind(tmp_path: Path, hop: LightningdDouble) -> Iterator[LightningdDouble]:
    """A payee reached only through `hop`, over a private channel: payer -> hop -> behind."""
    with LightningdDouble(tmp_path / "behind", alias="behind") as node:
        hop.connect(node, amount_sat=1_000_000, announce=False)
        yield node


@pytest.fixture
def two_hops(
    tmp_path: Path, hop: LightningdDouble, behind: LightningdDouble
) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "source", alias="source") as node:
        node.connect(hop, amount_sat=1_000_000)
        yield node


def test_an_invoice_behind_a_private_channel_carries_the_hops_fee_as_a_route_hint(
    hop: LightningdDouble, behind: LightningdDouble
) -> None:
    hop.rpc.call("setchannel", {"id": behind.node_id, "feebase": 1000, "feeppm": 2000})

    decoded = behind.rpc.decode(behind.rpc.invoice(50_000, "hinted", "behind a hop")["bolt11"])

    [[hint]] = decoded["routes"]
    [channel] = hop.rpc.listpeerchannels(behind.node_id)["channels"]
    assert channel["private"] is True
    assert hint == {
        "pubkey": hop.node_id,
        "short_channel_id": channel["short_channel_id"],
        "fee_base_msat": 1000,
        "fee_proportional_millionths": 2000,
        "cltv_expiry_delta": 6,
    }


def test_two_hops_pay_the_hops_fee_and_move_every_balance(
    two_hops: LightningdDouble, hop: LightningdDouble, behind: LightningdDouble
) -> None:
    hop.rpc.call("setchannel", {"id": behind.node_id, "feebase": 1000, "feeppm": 2000})
    invoice = behind.rpc.invoice(500_000, "two-hops", "through the hop")
    fee = 1000 + 500_000 * 2000 // 1_000_000

    paid = two_hops.rpc.xpay(invoice["bolt11"], maxfee=5000)

    assert (paid["amount_msat"], paid["amount_sent_msat"]) == (500_000, 500_000 + fee)
    [pay] = two_hops.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"]
    assert pay["amount_sent_msat"] == 500_000 + fee
    assert behind.rpc.listinvoices("two-hops")["invoices"][0]["status"] == "paid"
    into_hop, out_of_hop = (
        hop.rpc.listpeerchannels(two_hops.node_id)["channels"][0],
        hop.rpc.listpeerchannels(behind.node_id)["channels"][0],
    )
    assert into_hop["to_us_msat"] == 500_000 + fee  # the hop keeps its fee
    assert out_of_hop["to_us_msat"] == 1_000_000_000 - 500_000


def test_a_fee_too_low_for_the_route_hint_fails_with_xpays_209(
    two_hops: LightningdDouble, hop: LightningdDouble, behind: LightningdDouble
) -> None:
    invoice = behind.rpc.invoice(500_000, "stale-hint", "the hop raises its fee after this")
    hop.rpc.call("setchannel", {"id": behind.node_id, "feebase": 5000})

    error = refusal(two_hops.rpc.xpay, invoice["bolt11"])

    answers_as_recorded(error, "route hint's fee out of date")
    [part] = two_hops.rpc.listsendpays(payment_hash=invoice["payment_hash"])["payments"]
    assert part["status"] == "failed"  # one attempt went out and came back
    assert behind.rpc.listinvoices("stale-hint")["invoices"][0]["status"] == "unpaid"
    assert two_hops.rpc.listpeerchannels()["channels"][0]["to_us_msat"] == 1_000_000_000
