"""`dev-double-*` methods: how tests steer a double, and how two doubles talk to each other.

lightningd has none of these and the wallet never calls them; they share the socket so that a
double running as its own process can be steered from the test that started it.

- `dev-double-fault {method, fault, options}` queues a fault switch (see `faults.py`);
  `{"clear": true}` removes them all, `{}` changes nothing. Answers `{"queued": [...]}`.
- `dev-double-release {payment_hash}` lets a payment held by the `held` fault complete.
- `dev-double-connect {rpc_file, amount_sat=1000000, push_msat=0, announce=true}` opens a
  channel from this node to the double listening at `rpc_file`; `announce=false` makes it
  private, so the other side's invoices carry a route hint for it (`forwarding.py`).
- `dev-double-accept` and `dev-double-htlc` are the other side of opening and paying.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from pyln.client import LightningRpc

from tests.lightningd import channels, receiving
from tests.lightningd.errors import INVALID_PARAMS, LIGHTNINGD, RpcFailure
from tests.lightningd.info import FUNDING_FEE_MSAT
from tests.lightningd.node import Command, Node, Request
from tests.lightningd.params import (
    anything,
    boolean,
    msat,
    node_id,
    optional,
    required,
    string,
    u64,
)
from tests.lightningd.state import Channel

DEFAULT_CHANNEL_SAT = 1_000_000


def fault(node: Node, request: Request) -> dict[str, Any]:
    args = request.args
    if args["clear"]:
        node.faults.clear()
    elif (args["method"] is None) != (args["fault"] is None):
        raise RpcFailure(INVALID_PARAMS, "give both method and fault")
    elif args["method"] is not None:
        options = args["options"] or {}
        try:
            node.faults.next_call(args["method"], args["fault"], **options)
        except (TypeError, ValueError) as error:
            raise RpcFailure(INVALID_PARAMS, str(error)) from None
    return {"queued": node.faults.queued()}


def release(node: Node, request: Request) -> dict[str, Any]:
    with node.changed:
        node.released.add(request.args["payment_hash"])
        node.changed.notify_all()
    return {"released": request.args["payment_hash"]}


def connect(node: Node, request: Request) -> dict[str, Any]:
    """Open a channel to another double: it records its side, then we record ours."""
    total = int(request.args["amount_sat"]) * 1000
    pushed = int(request.args["push_msat"])
    private = not request.args["announce"]
    rpc_file = str(Path(request.args["rpc_file"]).absolute())
    peer = LightningRpc(rpc_file)
    try:
        peer_id = str(peer.call("getinfo")["id"])
    except OSError:
        raise RpcFailure(LIGHTNINGD, f"No double answers at {rpc_file}") from None
    with node.lock:
        if node.channel_with(peer_id) is not None:
            raise RpcFailure(INVALID_PARAMS, f"Already have a channel with {peer_id}")
        if node.state.onchain_msat < total + FUNDING_FEE_MSAT:
            raise RpcFailure(LIGHTNINGD, "Could not afford the channel: not enough funds on chain")
        ours = channels.new_channel(
            peer_id=peer_id,
            peer_rpc_file=rpc_file,
            opener="local",
            total_msat=total,
            to_us_msat=total - pushed,
            pushed_msat=pushed,
            opened_at=_timestamp(),
            private=private,
        )
    mirror = {**_describe(ours), "id": node.node_id, "rpc_file": str(node.rpc_file)}
    peer.call("dev-double-accept", mirror)
    with node.lock:
        node.state.channels.append(ours)
        node.state.onchain_msat -= total + FUNDING_FEE_MSAT
        node.save()
    return {
        "peer_id": peer_id,
        "channel_id": ours.channel_id,
        "short_channel_id": ours.short_channel_id,
    }


def _describe(channel: Channel) -> dict[str, Any]:
    return {
        "funding_txid": channel.funding_txid,
        "short_channel_id": channel.short_channel_id,
        "local_alias": channel.local_alias,
        "remote_alias": channel.remote_alias,
        "total_msat": channel.total_msat,
        "pushed_msat": channel.pushed_msat,
        "opened_at": channel.opened_at,
        "private": channel.private,
    }


def accept(node: Node, request: Request) -> dict[str, Any]:
    """The accepting side of `dev-double-connect`: the same channel, seen from here."""
    args = request.args
    ours = channels.new_channel(
        peer_id=args["id"],
        peer_rpc_file=args["rpc_file"],
        opener="remote",
        total_msat=args["total_msat"],
        to_us_msat=args["pushed_msat"],
        pushed_msat=args["pushed_msat"],
        opened_at=args["opened_at"],
        private=args["private"],
        ids={
            "funding_txid": args["funding_txid"],
            "short_channel_id": args["short_channel_id"],
            # Their local alias is our remote one, and the other way round.
            "local_alias": args["remote_alias"],
            "remote_alias": args["local_alias"],
        },
    )
    with node.lock:
        node.state.channels.append(ours)
        node.save()
    return {"channel_id": ours.channel_id}


def htlc(node: Node, request: Request) -> dict[str, Any]:
    """A payment arrives from a peer double: settle our invoice and give the preimage."""
    args = request.args
    preimage = receiving.accept_htlc(
        node, args["payment_hash"], args["amount_msat"], args["payment_secret"], args["sender"]
    )
    return {"payment_preimage": preimage}


def _timestamp() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


COMMANDS = {
    "dev-double-fault": Command(
        [
            optional("method", string),
            optional("fault", string),
            optional("options", anything),
            optional("clear", boolean, False),
        ],
        fault,
    ),
    "dev-double-release": Command([required("payment_hash", string)], release),
    "dev-double-connect": Command(
        [
            required("rpc_file", string),
            optional("amount_sat", u64, DEFAULT_CHANNEL_SAT),
            optional("push_msat", u64, 0),
            optional("announce", boolean, True),
        ],
        connect,
    ),
    "dev-double-accept": Command(
        [
            required("id", node_id),
            required("rpc_file", string),
            required("funding_txid", string),
            required("short_channel_id", string),
            required("local_alias", string),
            required("remote_alias", string),
            required("total_msat", msat),
            required("pushed_msat", msat),
            required("opened_at", string),
            optional("private", boolean, False),
        ],
        accept,
    ),
    "dev-double-htlc": Command(
        [
            required("payment_hash", string),
            required("amount_msat", msat),
            required("payment_secret", string),
            required("sender", node_id),
        ],
        htlc,
    ),
}
