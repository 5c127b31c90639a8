"""Being paid: `invoice`, `listinvoices`, `waitanyinvoice`, and `decode` for anyone's invoice."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from tests.lightningd import channels, forwarding, invoices
from tests.lightningd.errors import (
    INVALID_PARAMS,
    INVOICE_LABEL_ALREADY_EXISTS,
    INVOICE_PREIMAGE_ALREADY_EXISTS,
    INVOICE_WAIT_TIMED_OUT,
    RpcFailure,
    bad_param,
)
from tests.lightningd.node import Command, Node, Request, peer_reachable
from tests.lightningd.params import (
    anything,
    boolean,
    escaped_string,
    invstring,
    label,
    number,
    optional,
    positive_msat_or_any,
    preimage,
    required,
    sha256,
    string,
    u32,
    u64,
)
from tests.lightningd.state import Invoice

LABEL_LIMIT = 128
DESCRIPTION_LIMIT = 639
# A part we cannot take (wrong hash, amount or secret): BOLT #4's PERM|15 failure.
INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS = 0x400F
UNKNOWN_PAYMENT_DETAILS = "incorrect_or_unknown_payment_details"


def decode(node: Node, request: Request) -> dict[str, Any]:
    """Transcript: an expired invoice decodes normally; garbage gets -32602 from `string`."""
    text = request.args["string"]
    try:
        return invoices.decode(invoices.canonical(text)).decode_result()
    except invoices.InvoiceError as error:
        # `param_decodable` (plugins/offers.c) reports the failure of the most likely kind;
        # text that does not look like any (`guess_type`) is "Unparsable string".
        likely = str(error) if invoices.looks_like_bolt11(text) else "Unparsable string"
        raise bad_param("string", likely, text) from None


def check_invoice(node: Node, args: dict[str, Any]) -> None:
    if len(args["label"].encode()) > LABEL_LIMIT:
        raise RpcFailure(INVALID_PARAMS, f"Label '{args['label']}' over {LABEL_LIMIT} bytes")
    size = len(args["description"].encode())
    if size > DESCRIPTION_LIMIT and not args["deschashonly"]:
        raise RpcFailure(
            INVALID_PARAMS,
            f"Descriptions greater than {DESCRIPTION_LIMIT} bytes not yet supported"
            f" (description length {size})",
        )


def invoice(node: Node, request: Request) -> dict[str, Any]:
    """Transcript, `invoice`: a real bolt11 signed by this node; a used label gets 900."""
    args = request.args
    check_invoice(node, args)
    chosen = args["preimage"]
    preimage = bytes.fromhex(chosen) if chosen else secrets.token_bytes(32)
    payment_hash = hashlib.sha256(preimage).hexdigest()
    hints = tuple(hint.encoded() for hint in forwarding.route_hints(node))
    with node.lock:
        if any(i.payment_hash == payment_hash for i in node.state.invoices):
            raise RpcFailure(INVOICE_PREIMAGE_ALREADY_EXISTS, "preimage already used")
        if any(i.label == args["label"] for i in node.state.invoices):
            raise RpcFailure(INVOICE_LABEL_ALREADY_EXISTS, f"Duplicate label '{args['label']}'")
        created = _create(node, args, preimage, hints)
        node.save()
        warnings = _capacity_warnings(node, args["amount_msat"])
    return {
        "payment_hash": created.payment_hash,
        "expires_at": created.expires_at,
        "bolt11": created.bolt11,
        "payment_secret": created.payment_secret,
        "created_index": created.created_index,
        **warnings,
    }


def _create(node: Node, args: dict[str, Any], preimage: bytes, hints: tuple[bytes, ...]) -> Invoice:
    now = node.now()
    secret = invoices.new_payment_secret(preimage)
    bolt11 = invoices.encode(
        currency=node.currency,
        node_secret=node.secret,
        payment_hash=hashlib.sha256(preimage).digest(),
        payment_secret=secret,
        amount_msat=args["amount_msat"],
        description=args["description"],
        description_hash_only=args["deschashonly"],
        created_at=now,
        expiry=args["expiry"],
        final_cltv=args["cltv"],
        route_hints=hints,
    )
    created = Invoice(
        label=args["label"],
        bolt11=bolt11,
        payment_hash=hashlib.sha256(preimage).hexdigest(),
        preimage=preimage.hex(),
        payment_secret=secret.hex(),
        amount_msat=args["amount_msat"],
        description=args["description"],
        expires_at=now + args["expiry"],
        created_index=node.state.next_index("invoices_created"),
    )
    node.state.invoices.append(created)
    return created


def _capacity_warnings(node: Node, amount_msat: int | None) -> dict[str, str]:
    """lightningd's `add_routehints` warnings, every peer being a dead end (no gossip here).

    Transcript: 1,000,000 msat over the payer's channel gets `warning_deadends`; 5,000,000,000
    msat, more than the channel holds, gets `warning_capacity` alone.
    """
    needed = amount_msat or 1
    deadend = offline = 0
    for channel in node.state.channels:
        if channel.private and channels.receivable(channel) >= needed:
            return {}  # a route hint through this channel can carry it
        if peer_reachable(channel.peer_rpc_file):
            deadend += channels.receivable(channel)
        else:
            offline += channels.receivable(channel)
    warnings = {}
    if needed >= deadend + offline:
        warnings["warning_capacity"] = "Insufficient incoming channel capacity to pay invoice"
    if offline >= needed:
        warnings["warning_offline"] = (
            "Insufficient incoming capacity, once offline peers were excluded"
        )
    elif offline + deadend >= needed:
        warnings["warning_deadends"] = (
            "Insufficient incoming capacity, once dead-end peers were excluded"
        )
    return warnings


def listinvoices(node: Node, request: Request) -> dict[str, Any]:
    args = request.args
    with node.lock:
        now = node.now()
        found = [
            i
            for i in node.state.invoices
            if args["label"] in (None, i.label)
            and args["invstring"] in (None, i.bolt11)
            and args["payment_hash"] in (None, i.payment_hash)
        ]
        found = _page(found, args)
        return {"invoices": [i.listing(now) for i in found]}


def _page(found: list[Invoice], args: dict[str, Any]) -> list[Invoice]:
    if args["index"] is None:
        return found
    position = "created_index" if args["index"] == "created" else "updated_index"
    found = [i for i in found if (getattr(i, position) or 0) >= args["start"]]
    return found if args["limit"] is None else found[: args["limit"]]


def waitanyinvoice(node: Node, request: Request) -> dict[str, Any]:
    """Transcript: the first invoice paid after `lastpay_index`; 904 when `timeout` runs out."""
    after = request.args["lastpay_index"] or 0
    timeout = request.args["timeout"]
    deadline = None if timeout is None else node.now() + timeout
    with node.changed:
        while not node.closed:
            paid = sorted(
                (i for i in node.state.invoices if i.paid and (i.pay_index or 0) > after),
                key=lambda i: i.pay_index or 0,
            )
            if paid:
                return paid[0].listing(node.now())
            remaining = None if deadline is None else deadline - node.now()
            if remaining is not None and remaining <= 0:
                raise RpcFailure(
                    INVOICE_WAIT_TIMED_OUT, "Timed out while waiting for invoice to be paid"
                )
            node.changed.wait(0.5 if remaining is None else min(remaining, 0.5))
    request.call.drop()
    return {}


def accept_htlc(node: Node, payment_hash: str, amount_msat: int, secret: str, sender: str) -> str:
    """The payee's side of a payment: settle the invoice and reveal the preimage."""
    with node.changed:
        found = next((i for i in node.state.invoices if i.payment_hash == payment_hash), None)
        if found is None or not _acceptable(node, found, amount_msat, secret):
            raise RpcFailure(INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, UNKNOWN_PAYMENT_DETAILS)
        found.paid = True
        found.pay_index = node.state.next_index("invoices_paid")
        found.amount_received_msat = amount_msat
        found.paid_at = node.now()
        found.updated_index = node.state.next_index("invoices_updated")
        channel = node.channel_with(sender)
        if channel is not None:
            channels.receive(channel, amount_msat)
        node.save()
        node.changed.notify_all()
        return found.preimage


def _acceptable(node: Node, found: Invoice, amount_msat: int, secret: str) -> bool:
    if found.paid or node.now() > found.expires_at:
        return False
    if found.payment_secret != secret:
        return False
    # BOLT #4: at least the amount asked, and not more than twice it.
    return found.amount_msat is None or found.amount_msat <= amount_msat <= 2 * found.amount_msat


COMMANDS = {
    "decode": Command([required("string", string)], decode),
    "invoice": Command(
        [
            required("amount_msat", positive_msat_or_any),
            required("label", label),
            required("description", escaped_string),
            optional("expiry", u64, invoices.DEFAULT_EXPIRY),
            optional("fallbacks", anything),
            optional("preimage", preimage),
            optional("exposeprivatechannels", anything),
            optional("cltv", number, invoices.DEFAULT_FINAL_CLTV),
            optional("deschashonly", boolean, False),
        ],
        invoice,
        check=check_invoice,
    ),
    "listinvoices": Command(
        [
            optional("label", label),
            optional("invstring", invstring),
            optional("payment_hash", sha256),
            optional("offer_id", string),
            optional("index", string),
            optional("start", u64, 0),
            optional("limit", u32),
        ],
        listinvoices,
    ),
    "waitanyinvoice": Command(
        [optional("lastpay_index", u64), optional("timeout", u64)], waitanyinvoice
    ),
}
