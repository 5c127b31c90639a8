"""Paying: `xpay`, and legacy `pay`, which xpay answers in v26.06 (lightning.md §4.2).

A payment is recorded as lightningd records it: one `listsendpays` row per part and attempt,
`pending` while the HTLC is out, then `complete` with the preimage or `failed`. The payee is
another double, reached through its own socket, which settles its invoice and gives the preimage.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pyln.client import LightningRpc, RpcError

from tests.lightningd import channels, forwarding, invoices, receiving
from tests.lightningd.errors import (
    INVALID_PARAMS,
    LIGHTNINGD,
    PAY_ALREADY_PAID,
    PAY_DESTINATION_PERM_FAIL,
    PAY_IN_PROGRESS,
    PAY_INVOICE_EXPIRED,
    PLUGIN_ERROR,
    PLUGIN_TERMINATED,
    RpcFailure,
)
from tests.lightningd.faults import Fault
from tests.lightningd.node import Command, Node, Request
from tests.lightningd.params import (
    anything,
    invstring,
    msat,
    non_negative_number,
    number,
    optional,
    required,
    string,
    u32,
)
from tests.lightningd.routing import Route, no_route, plan_route
from tests.lightningd.state import SendPay
from tests.lightningd.wire import Call

ALREADY_PAID = "Already paid this invoice successfully"
PLUGIN_DIED = "Plugin terminated before replying to RPC call."
# xpay's default maxfee: "5000msat, or 1% (whatever is greater)" (lightning.md §4.2).
MAXFEE_FLOOR_MSAT = 5000


@dataclass(frozen=True)
class Payment:
    bolt11: str
    invoice: invoices.Bolt11
    amount_msat: int
    maxfee_msat: int
    label: str | None
    as_pay: bool


def prepare(node: Node, args: dict[str, Any], *, as_pay: bool) -> Payment:
    """Everything xpay checks before sending (`xpay_core`); `check` stops here too."""
    text = args["invstring"] if not as_pay else args["bolt11"] or args["invstring"]
    if text is None:
        raise RpcFailure(INVALID_PARAMS, "missing required parameter: bolt11")
    try:
        invoice = invoices.decode(text, network=node.network)
    except invoices.InvoiceError as error:
        raise RpcFailure(INVALID_PARAMS, f"Invalid bolt11 invoice: {error}") from None
    if invoice.payment_secret is None:
        raise RpcFailure(INVALID_PARAMS, "need payment_secret")
    amount = _amount(invoice, args["amount_msat"])
    if args["partial_msat"] is not None:
        raise RpcFailure(LIGHTNINGD, "partial_msat: the lightningd double pays whole invoices")
    now = node.now()
    if now > invoice.expires_at:
        raise RpcFailure(
            PAY_INVOICE_EXPIRED, f"Invoice expired {now - invoice.expires_at} seconds ago"
        )
    maxfee = _pay_maxfee(args, amount) if as_pay else _xpay_maxfee(args, amount)
    return Payment(text, invoice, amount, maxfee, args["label"], as_pay)


def _amount(invoice: invoices.Bolt11, given: int | None) -> int:
    """Transcript: an amountless invoice without `amount_msat` gets "amount_msat required"."""
    if invoice.amount_msat is None:
        if given is None:
            raise RpcFailure(INVALID_PARAMS, "amount_msat required")
        amount = given
    elif given is not None:
        raise RpcFailure(INVALID_PARAMS, "amount_msat unnecessary")
    else:
        amount = invoice.amount_msat
    if amount == 0:
        raise RpcFailure(INVALID_PARAMS, "Cannot pay bolt11 invoice with zero amount")
    return amount


def _xpay_maxfee(args: dict[str, Any], amount: int) -> int:
    given = args["maxfee"]
    return int(given) if given is not None else max(MAXFEE_FLOOR_MSAT, amount // 100)


def _pay_maxfee(args: dict[str, Any], amount: int) -> int:
    if args["maxfee"] is not None:
        return int(args["maxfee"])
    return max(int(args["exemptfee"]), int(amount * args["maxfeepercent"] / 100))


def xpay(node: Node, request: Request) -> dict[str, Any]:
    return _pay(node, request, prepare(node, request.args, as_pay=False))


def pay(node: Node, request: Request) -> dict[str, Any]:
    return _pay(node, request, prepare(node, request.args, as_pay=True))


def _pay(node: Node, request: Request, payment: Payment) -> dict[str, Any]:
    started = time.time()
    _injected_refusal(node, request.fault)
    with node.lock:
        earlier = _earlier_payment(node, payment)
        if earlier is not None:
            return earlier
        route = plan_route(
            node,
            payment.invoice.payee,
            payment.amount_msat,
            payment.maxfee_msat,
            payment.invoice.routes,
        )
        part = _start_part(node, payment, route, secrets.randbelow(2**63), partid=1)
    preimage, failed_parts = _carry_out(node, request, payment, route, part)
    if request.fault is not None and request.fault.name == "already_paid":
        raise RpcFailure(PAY_ALREADY_PAID, ALREADY_PAID)
    return _success(payment, route, preimage, failed_parts, started)


def _success(
    payment: Payment, route: Route, preimage: str, failed_parts: int, started: float
) -> dict[str, Any]:
    """Transcript, `xpay`: no hash, no status; `pay` adds its own fields (`payment_succeeded`)."""
    answer: dict[str, Any] = {
        "payment_preimage": preimage,
        "amount_msat": payment.amount_msat,
        "amount_sent_msat": payment.amount_msat + route.fee_msat,
    }
    if not payment.as_pay:
        return {**answer, "failed_parts": failed_parts, "successful_parts": 1}
    return {
        **answer,
        "parts": failed_parts + 1,
        "destination": payment.invoice.payee,
        "payment_hash": payment.invoice.payment_hash,
        "status": "complete",
        # xpay writes the start time with milliseconds (`json_add_timeabs`).
        "created_at": round(started, 3),
    }


def _injected_refusal(node: Node, fault: Fault | None) -> None:
    if fault is None:
        return
    if fault.name == "no_route":
        count = max(1, len(node.state.channels))
        raise no_route(f"All {count} channels to the source are disabled.")
    if fault.name == "expired":
        seconds = fault.option("seconds_ago")
        raise RpcFailure(PAY_INVOICE_EXPIRED, f"Invoice expired {seconds} seconds ago")


def _earlier_payment(node: Node, payment: Payment) -> dict[str, Any] | None:
    """Transcript: xpay again answers 219; legacy pay answers the earlier success."""
    parts = [p for p in node.state.sendpays if p.payment_hash == payment.invoice.payment_hash]
    complete = [p for p in parts if p.status == "complete"]
    if complete and payment.as_pay:
        first = complete[0]
        return {
            "payment_preimage": first.payment_preimage,
            "status": "complete",
            "amount_msat": sum(p.amount_msat for p in complete),
            "amount_sent_msat": sum(p.amount_sent_msat for p in complete),
            "destination": first.destination,
            "payment_hash": first.payment_hash,
            "created_at": first.created_at,
            "parts": len(complete),
        }
    if complete:
        raise RpcFailure(PAY_ALREADY_PAID, ALREADY_PAID)
    pending = [p for p in parts if p.status == "pending"]
    if pending:
        raise in_progress(pending[0].groupid)
    return None


def in_progress(groupid: int) -> RpcFailure:
    """What xpay says when lightningd refuses to inject a second payment of an invoice in
    flight: injectpaymentonion's 200 wrapped in -3 (`injectpaymentonion_failed`, xpay.c),
    as the real node answered (issue 10, recorded in data/cln-v26.06.6-more.json)."""
    inner = {
        "code": PAY_IN_PROGRESS,
        "message": f"Payment with groupid={groupid} still in progress,"
        " cannot retry before that completes.",
    }
    return RpcFailure(
        PLUGIN_ERROR,
        f"Unexpected injectpaymentonion error {PAY_IN_PROGRESS}:"
        f" {json.dumps(inner, separators=(',', ':'))}",
    )


def _start_part(node: Node, payment: Payment, route: Route, groupid: int, partid: int) -> SendPay:
    """An HTLC goes out: a `pending` row, and the amount leaves our balance."""
    with node.lock:
        part = SendPay(
            created_index=node.state.next_index("sendpays_created"),
            payment_hash=payment.invoice.payment_hash,
            groupid=groupid,
            partid=partid,
            destination=payment.invoice.payee,
            amount_msat=payment.amount_msat,
            amount_sent_msat=payment.amount_msat + route.fee_msat,
            created_at=node.now(),
            bolt11=payment.bolt11,
            label=payment.label,
        )
        node.state.sendpays.append(part)
        if route.channel is not None:
            expiry = node.state.blockheight + payment.invoice.min_final_cltv_expiry + 1
            channels.offer_htlc(route.channel, part.amount_sent_msat, part.payment_hash, expiry)
        node.save()
        return part


def _finish_part(node: Node, part: SendPay, route: Route, preimage: str | None) -> None:
    with node.lock:
        part.status = "failed" if preimage is None else "complete"
        part.completed_at = node.now()
        part.payment_preimage = preimage
        part.updated_index = node.state.next_index("sendpays_updated")
        if route.channel is not None:
            channels.settle_htlc(route.channel, part.payment_hash, preimage is not None)
        node.save()


def _carry_out(
    node: Node, request: Request, payment: Payment, route: Route, part: SendPay
) -> tuple[str, int]:
    """The payment's timeline, stretched or broken by the fault switch (lightning.md §4.4)."""
    fault = request.fault
    failed_parts = 0
    if fault is not None and fault.name in (
        "pending_then_complete",
        "failed_then_complete",
        "held",
    ):
        _answer_early(request.call, fault.option("reply"))
    if fault is not None and fault.name == "pending_then_complete":
        time.sleep(float(fault.option("after")))
    elif fault is not None and fault.name == "held":
        with node.changed:
            node.changed.wait_for(lambda: part.payment_hash in node.released or node.closed)
    elif fault is not None and fault.name == "failed_then_complete":
        time.sleep(float(fault.option("pending_for")))
        _finish_part(node, part, route, None)
        failed_parts = 1
        # Nothing in flight now: listpays says `failed` although xpay is still retrying.
        time.sleep(float(fault.option("failed_for")))
        part = _start_part(node, payment, route, part.groupid, part.partid + 1)
        time.sleep(float(fault.option("pending_for")))
    return _deliver(node, payment, route, part), failed_parts


def _answer_early(call: Call, reply: str) -> None:
    if reply == "error":
        call.answer_error(RpcFailure(PLUGIN_TERMINATED, PLUGIN_DIED))
    elif reply == "drop":
        call.drop()


def _deliver(node: Node, payment: Payment, route: Route, part: SendPay) -> str:
    """The payee settles and hands back the preimage, or refuses."""
    try:
        preimage = _ask_payee(node, payment, route, part)
    except forwarding.HopRefused:
        _finish_part(node, part, route, None)
        assert route.hint is not None
        raise forwarding.weird_error(route.hint, payment.invoice.payee) from None
    except RpcFailure as refusal:
        _finish_part(node, part, route, None)
        raise RpcFailure(
            PAY_DESTINATION_PERM_FAIL,
            f"Destination said it doesn't know invoice: {refusal.message}",
        ) from None
    except (OSError, RpcError):
        _finish_part(node, part, route, None)
        raise no_route("All 1 channels to the source are disabled.") from None
    if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != part.payment_hash:
        _finish_part(node, part, route, None)
        raise RpcFailure(PAY_DESTINATION_PERM_FAIL, "Destination gave a wrong preimage")
    _finish_part(node, part, route, preimage)
    return preimage


def _ask_payee(node: Node, payment: Payment, route: Route, part: SendPay) -> str:
    secret = payment.invoice.payment_secret or ""
    if route.channel is None:
        return receiving.accept_htlc(
            node, part.payment_hash, part.amount_msat, secret, node.node_id
        )
    htlc = {
        "payment_hash": part.payment_hash,
        "amount_msat": part.amount_msat,
        "payment_secret": secret,
        "sender": node.node_id,
    }
    try:
        if route.hint is not None:
            return forwarding.send_through(
                route.channel, route.hint, {**htlc, "fee_msat": route.fee_msat}
            )
        answer = LightningRpc(route.channel.peer_rpc_file).call("dev-double-htlc", htlc)
    except RpcError as error:
        if isinstance(error.error, dict) and error.error.get("code") == (
            receiving.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
        ):
            raise RpcFailure(int(error.error["code"]), str(error.error["message"])) from None
        raise
    return str(answer["payment_preimage"])


def check_xpay(node: Node, args: dict[str, Any]) -> None:
    prepare(node, args, as_pay=False)


def check_pay(node: Node, args: dict[str, Any]) -> None:
    prepare(node, args, as_pay=True)


COMMANDS = {
    "xpay": Command(
        [
            required("invstring", invstring),
            optional("amount_msat", msat),
            optional("maxfee", msat),
            optional("layers", anything),
            optional("retry_for", number, 60),
            optional("partial_msat", msat),
            optional("maxdelay", u32, 2016),
            optional("payer_note", string),
            optional("label", string),
            optional("localinvreqid", string),
            optional("dev_use_shadow", anything),
        ],
        xpay,
        check=check_xpay,
    ),
    "pay": Command(
        [
            optional("bolt11", invstring),
            optional("amount_msat", msat),
            optional("label", string),
            optional("riskfactor", anything),
            optional("maxfeepercent", non_negative_number, 0.5),
            optional("retry_for", number, 60),
            optional("maxdelay", u32),
            optional("exemptfee", msat, MAXFEE_FLOOR_MSAT),
            optional("localinvreqid", string),
            optional("exclude", anything),
            optional("maxfee", msat),
            optional("description", string),
            optional("partial_msat", msat),
            # Since v26.06 `pay` also takes the invoice as `invstring` (lightning.md §4.2).
            optional("invstring", invstring),
        ],
        pay,
        check=check_pay,
    ),
}
