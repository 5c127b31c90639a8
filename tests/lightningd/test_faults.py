"""Each fault switch, seen the way the wallet will see it: through pyln-client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from pyln.client import RpcError

from tests.lightningd import LightningdDouble

CONNECTION_LOST = "Connection to RPC server lost."


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture
def invoice(payee: LightningdDouble) -> dict[str, Any]:
    answer: dict[str, Any] = payee.rpc.invoice(25_000, "faulty", "a payment that misbehaves")
    return answer


def _status(payer: LightningdDouble, invoice: dict[str, Any]) -> str | None:
    pays = payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"]
    return str(pays[0]["status"]) if pays else None


def _invoice_status(payee: LightningdDouble) -> str:
    return str(payee.rpc.listinvoices(label="faulty")["invoices"][0]["status"])


def _statuses_until_complete(payer: LightningdDouble, invoice: dict[str, Any]) -> list[str | None]:
    """Every status `listpays` shows, in order, until it says complete.

    It is polled, so on a loaded machine a short phase may slip by unseen.
    """
    seen: list[str | None] = []
    deadline = time.monotonic() + 15
    while not seen or seen[-1] != "complete":
        assert time.monotonic() < deadline, f"never completed; saw {seen}"
        status = _status(payer, invoice)
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.02)
    return seen


def test_pending_then_complete_holds_the_call_while_listpays_says_pending(
    payer: LightningdDouble, invoice: dict[str, Any], background: ThreadPoolExecutor
) -> None:
    payer.faults.next_xpay("pending_then_complete", after=2.0)

    call: Future[Any] = background.submit(payer.rpc.xpay, invoice["bolt11"])

    wait_for(lambda: _status(payer, invoice) == "pending", 5, "a pending payment")
    assert not call.done()
    assert len(payer.rpc.listpeerchannels()["channels"][0]["htlcs"]) == 1
    assert call.result(timeout=10)["payment_preimage"]
    assert _status(payer, invoice) == "complete"
    assert payer.rpc.listpeerchannels()["channels"][0]["htlcs"] == []


def test_pending_then_complete_can_fail_the_call_while_the_payment_goes_on(
    payer: LightningdDouble, payee: LightningdDouble, invoice: dict[str, Any]
) -> None:
    payer.faults.next_xpay("pending_then_complete", after=1.0, reply="error")

    with pytest.raises(RpcError) as died:
        payer.rpc.xpay(invoice["bolt11"])

    assert died.value.error == {
        "code": -4,
        "message": "Plugin terminated before replying to RPC call.",
    }
    assert _statuses_until_complete(payer, invoice) == ["pending", "complete"]
    assert _invoice_status(payee) == "paid"


def test_failed_while_retrying_then_complete(
    payer: LightningdDouble, invoice: dict[str, Any]
) -> None:
    """lightning.md §4.4: listpays says failed for a while, and the payment still completes."""
    payer.faults.next_xpay("failed_then_complete", pending_for=0.5, failed_for=1.0, reply="error")

    with pytest.raises(RpcError):
        payer.rpc.xpay(invoice["bolt11"])

    seen = _statuses_until_complete(payer, invoice)
    assert "failed" in seen
    timeline: Iterator[str | None] = iter(["pending", "failed", "pending", "complete"])
    assert all(status in timeline for status in seen), seen  # in this order, none skipped back
    parts = payer.rpc.listsendpays(payment_hash=invoice["payment_hash"])["payments"]
    assert [(p["partid"], p["status"]) for p in parts] == [(1, "failed"), (2, "complete")]
    assert parts[0]["groupid"] == parts[1]["groupid"]


def test_failed_then_complete_answers_with_the_failed_part_counted(
    payer: LightningdDouble, invoice: dict[str, Any]
) -> None:
    payer.faults.next_xpay("failed_then_complete", pending_for=0.05, failed_for=0.1)

    paid = payer.rpc.xpay(invoice["bolt11"])

    assert (paid["failed_parts"], paid["successful_parts"]) == (1, 1)


def test_already_paid_answers_219_with_the_preimage_in_listpays(
    payer: LightningdDouble, payee: LightningdDouble, invoice: dict[str, Any]
) -> None:
    payer.faults.next_xpay("already_paid")

    with pytest.raises(RpcError) as refused:
        payer.rpc.xpay(invoice["bolt11"])

    assert refused.value.error == {"code": 219, "message": "Already paid this invoice successfully"}
    [pay] = payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"]
    assert pay["status"] == "complete"
    assert (
        pay["preimage"] == payee.rpc.listinvoices(label="faulty")["invoices"][0]["payment_preimage"]
    )


def test_no_route_records_nothing_and_is_used_once(
    payer: LightningdDouble, payee: LightningdDouble, invoice: dict[str, Any]
) -> None:
    payer.faults.next_xpay("no_route")

    with pytest.raises(RpcError) as refused:
        payer.rpc.xpay(invoice["bolt11"])

    assert refused.value.error["code"] == 205
    assert refused.value.error["message"].startswith(
        "Failed: We could not find a usable set of paths."
    )
    assert payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"] == []
    assert payer.rpc.listsendpays(payment_hash=invoice["payment_hash"])["payments"] == []
    assert _invoice_status(payee) == "unpaid"
    assert payer.rpc.xpay(invoice["bolt11"])["payment_preimage"]


def test_expired_answers_207(payer: LightningdDouble, invoice: dict[str, Any]) -> None:
    payer.faults.next_xpay("expired", seconds_ago=12)

    with pytest.raises(RpcError) as refused:
        payer.rpc.xpay(invoice["bolt11"])

    assert refused.value.error == {"code": 207, "message": "Invoice expired 12 seconds ago"}
    assert payer.rpc.listsendpays(payment_hash=invoice["payment_hash"])["payments"] == []


def test_a_dropped_call_before_paying_pays_nothing(
    payer: LightningdDouble, payee: LightningdDouble, invoice: dict[str, Any]
) -> None:
    payer.faults.next_xpay("drop", paid=False)

    with pytest.raises(RpcError) as lost:
        payer.rpc.xpay(invoice["bolt11"])

    assert lost.value.error == CONNECTION_LOST
    assert payer.rpc.listpays(payment_hash=invoice["payment_hash"])["pays"] == []
    assert _invoice_status(payee) == "unpaid"


def test_a_dropped_call_after_paying_leaves_the_payment_made(
    payer: LightningdDouble, payee: LightningdDouble, invoice: dict[str, Any]
) -> None:
    payer.faults.next_xpay("drop", paid=True)

    with pytest.raises(RpcError) as lost:
        payer.rpc.xpay(invoice["bolt11"])

    assert lost.value.error == CONNECTION_LOST
    assert _status(payer, invoice) == "complete"
    assert _invoice_status(payee) == "paid"


def test_a_slow_answer_comes_after_the_payment_is_made(
    payer: LightningdDouble, invoice: dict[str, Any], background: ThreadPoolExecutor
) -> None:
    payer.faults.next_xpay("slow", seconds=1.5)

    call: Future[Any] = background.submit(payer.rpc.xpay, invoice["bolt11"])

    wait_for(lambda: _status(payer, invoice) == "complete", 5, "the payment")
    assert not call.done()
    assert call.result(timeout=10)["payment_preimage"]


def test_any_method_can_be_dropped_or_slowed(payer: LightningdDouble) -> None:
    payer.faults.next_call("listfunds", "drop")
    payer.faults.next_call("getinfo", "slow", seconds=0.1)

    with pytest.raises(RpcError) as lost:
        payer.rpc.listfunds()

    assert lost.value.error == CONNECTION_LOST
    assert payer.rpc.getinfo()["alias"] == "payer"
    assert payer.faults.queued() == []


def test_an_unknown_fault_is_refused_by_name(payer: LightningdDouble) -> None:
    with pytest.raises(ValueError, match="no fault 'stuck'"):
        payer.faults.next_xpay("stuck")
    with pytest.raises(ValueError, match="takes"):
        payer.faults.next_xpay("slow", minutes=1)
