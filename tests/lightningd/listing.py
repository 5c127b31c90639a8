"""What was paid: `listsendpays`, one row per part, and `listpays`, one entry per attempt."""

from __future__ import annotations

from typing import Any

from tests.lightningd.node import Command, Node, Request
from tests.lightningd.params import invstring, optional, sha256, string, u32, u64
from tests.lightningd.state import SendPay


def listsendpays(node: Node, request: Request) -> dict[str, Any]:
    """Transcript, `listsendpays`: one row per part, `payment_preimage` when complete."""
    with node.lock:
        return {"payments": [part.listing() for part in _parts(node, request.args)]}


def _parts(node: Node, args: dict[str, Any]) -> list[SendPay]:
    found = [
        p
        for p in node.state.sendpays
        if args["bolt11"] in (None, p.bolt11)
        and args["payment_hash"] in (None, p.payment_hash)
        and args["status"] in (None, p.status)
        and args.get("label") in (None, p.label)
    ]
    if args["index"] is not None:
        position = "created_index" if args["index"] == "created" else "updated_index"
        found = [p for p in found if (getattr(p, position) or 0) >= args["start"]]
        found = found if args["limit"] is None else found[: args["limit"]]
    return found


def listpays(node: Node, request: Request) -> dict[str, Any]:
    """Transcript, `listpays`: one entry per attempt group, `preimage` when complete."""
    with node.lock:
        groups: dict[tuple[str, int], list[SendPay]] = {}
        for part in _parts(node, request.args):
            groups.setdefault((part.payment_hash, part.groupid), []).append(part)
        return {"pays": [_pay_entry(parts) for parts in groups.values()]}


def _pay_entry(parts: list[SendPay]) -> dict[str, Any]:
    """`add_new_entry` in `plugins/xpay/listpays.c`, field for field."""
    first = parts[0]
    complete = [p for p in parts if p.status == "complete"]
    alive = [p for p in parts if p.status != "failed"]
    entry: dict[str, Any] = {
        "bolt11": first.bolt11,
        "destination": first.destination,
        "payment_hash": first.payment_hash,
        "status": _group_status(parts),
        "created_at": first.created_at,
    }
    if complete:
        entry["completed_at"] = min(p.completed_at or 0 for p in complete)
    if first.label is not None:
        entry["label"] = first.label
    if complete:
        entry["preimage"] = complete[-1].payment_preimage
    if alive:
        entry["amount_msat"] = sum(p.amount_msat for p in alive)
    entry["amount_sent_msat"] = sum(p.amount_sent_msat for p in alive)
    if len(alive) > 1:
        entry["number_of_parts"] = len(alive)
    entry["created_index"] = min(p.created_index for p in parts)
    updated = max(p.updated_index or 0 for p in parts)
    if updated:
        entry["updated_index"] = updated
    return entry


def _group_status(parts: list[SendPay]) -> str:
    statuses = {p.status for p in parts}
    if "complete" in statuses:
        return "complete"
    return "pending" if "pending" in statuses else "failed"


LISTING_PARAMS = [
    optional("bolt11", invstring),
    optional("payment_hash", sha256),
    optional("status", string),
    optional("index", string),
    optional("start", u64, 0),
    optional("limit", u32),
]
COMMANDS = {
    "listsendpays": Command(LISTING_PARAMS, listsendpays),
    "listpays": Command([*LISTING_PARAMS, optional("label", string)], listpays),
}
