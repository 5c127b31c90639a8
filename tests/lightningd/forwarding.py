"""Two hops: a payee behind a private channel, reached through the invoice's route hint.

The payee's invoice carries a route hint (BOLT 11 `r`) for each private channel it has, with
the fee the hop charged when the invoice was made, as lightningd's `add_routehints` does. The
payer pays the hop over its own channel, amount plus the hint's fee; the hop forwards with
`dev-double-forward` if the fee is at least its current one (`setchannel` changes it), and
answers `fee_insufficient` otherwise, which xpay reports as the real node did (209).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pyln.client import LightningRpc, RpcError

from tests.lightningd import channels, receiving
from tests.lightningd.errors import INVALID_PARAMS, PAY_UNSPECIFIED_ERROR, RpcFailure
from tests.lightningd.node import Command, Node, Request
from tests.lightningd.params import boolean, msat, node_id, optional, required, string, u32
from tests.lightningd.state import Channel

# BOLT #4 failure codes a forwarding node gives (UPDATE|12 and PERM|10).
FEE_INSUFFICIENT = 0x1000 | 12
UNKNOWN_NEXT_PEER = 0x4000 | 10
CLTV_EXPIRY_DELTA = 6
HINT_BYTES = 33 + 8 + 4 + 4 + 2


@dataclass(frozen=True)
class RouteHint:
    """One hop of a BOLT 11 route hint: the hop, its channel to the payee, its fee then."""

    pubkey: str
    short_channel_id: str
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int

    def fee_of(self, amount_msat: int) -> int:
        return self.fee_base_msat + amount_msat * self.fee_proportional_millionths // 1_000_000

    def encoded(self) -> bytes:
        block, tx, out = (int(part) for part in self.short_channel_id.split("x"))
        scid = (block << 40) | (tx << 16) | out
        return bytes.fromhex(self.pubkey) + struct.pack(
            ">QIIH",
            scid,
            self.fee_base_msat,
            self.fee_proportional_millionths,
            self.cltv_expiry_delta,
        )

    @classmethod
    def read(cls, data: bytes) -> list[RouteHint]:
        hops = []
        for start in range(0, len(data) - HINT_BYTES + 1, HINT_BYTES):
            chunk = data[start : start + HINT_BYTES]
            scid, base, ppm, delta = struct.unpack(">QIIH", chunk[33:])
            name = f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"
            hops.append(cls(chunk[:33].hex(), name, base, ppm, delta))
        return hops

    def listing(self) -> dict[str, Any]:
        """As `decode` shows a hop of `routes`."""
        return {
            "pubkey": self.pubkey,
            "short_channel_id": self.short_channel_id,
            "fee_base_msat": self.fee_base_msat,
            "fee_proportional_millionths": self.fee_proportional_millionths,
            "cltv_expiry_delta": self.cltv_expiry_delta,
        }


def route_hints(node: Node) -> list[RouteHint]:
    """A hint per private channel whose peer answers: the hop's fee toward us, as it is now."""
    hints = []
    for channel in node.state.channels:
        if not channel.private:
            continue
        try:
            theirs = LightningRpc(channel.peer_rpc_file).call(
                "listpeerchannels", {"id": node.node_id}
            )["channels"]
        except (OSError, RpcError):
            continue
        for listing in theirs:
            if listing["short_channel_id"] == channel.short_channel_id:
                policy = listing["updates"]["local"]
                hints.append(
                    RouteHint(
                        channel.peer_id,
                        channel.short_channel_id,
                        policy["fee_base_msat"],
                        policy["fee_proportional_millionths"],
                        policy["cltv_expiry_delta"],
                    )
                )
    return hints


def direction(from_id: str, to_id: str) -> int:
    """BOLT 7: direction 0 is from the node with the lesser id."""
    return 0 if from_id < to_id else 1


def weird_error(hint: RouteHint, payee: str) -> RpcFailure:
    """xpay, after the hop refused the hint's old fee: it disables the hint's channel for this
    payment, and routing finds nothing else (`getroutes_done_err`, `explain_failure`)."""
    scidd = f"{hint.short_channel_id}/{direction(hint.pubkey, payee)}"
    return RpcFailure(
        PAY_UNSPECIFIED_ERROR,
        f"Failed after 1 attempts. We got a weird error (fee_insufficient) for the invoice's"
        f" route hint ({scidd}): disabling it for this payment. Then routing failed: We could"
        " not find a usable set of paths. All 1 channels to the destination are disabled.",
    )


class HopRefused(Exception):
    """The hop would not forward for the fee offered (`fee_insufficient`)."""


def send_through(hop: Channel, hint: RouteHint, htlc: dict[str, Any]) -> str:
    """Ask the hop to forward. A `fee_insufficient` refusal is HopRefused; the payee's own
    refusal comes back as the RpcError `dev-double-htlc` gives."""
    forward = {**htlc, "short_channel_id": hint.short_channel_id}
    try:
        answer = LightningRpc(hop.peer_rpc_file).call("dev-double-forward", forward)
    except RpcError as error:
        if isinstance(error.error, dict) and error.error.get("code") == FEE_INSUFFICIENT:
            raise HopRefused() from None
        raise
    return str(answer["payment_preimage"])


def forward(node: Node, request: Request) -> dict[str, Any]:
    """The hop: check the fee against the channel's current one, pass the HTLC on, settle."""
    args = request.args
    with node.lock:
        out = next(
            (c for c in node.state.channels if c.short_channel_id == args["short_channel_id"]),
            None,
        )
        into = node.channel_with(args["sender"])
        if out is None or into is None:
            raise RpcFailure(UNKNOWN_NEXT_PEER, "unknown_next_peer")
        needed = out.fee_base_msat + args["amount_msat"] * out.fee_ppm // 1_000_000
        if args["fee_msat"] < needed:
            raise RpcFailure(FEE_INSUFFICIENT, "fee_insufficient")
        expiry = node.state.blockheight + CLTV_EXPIRY_DELTA
        channels.offer_htlc(out, args["amount_msat"], args["payment_hash"], expiry)
        node.save()
    htlc = {
        "payment_hash": args["payment_hash"],
        "amount_msat": args["amount_msat"],
        "payment_secret": args["payment_secret"],
        "sender": node.node_id,
    }
    try:
        preimage = str(
            LightningRpc(out.peer_rpc_file).call("dev-double-htlc", htlc)["payment_preimage"]
        )
    except (OSError, RpcError):
        with node.lock:
            channels.settle_htlc(out, args["payment_hash"], False)
            node.save()
        raise RpcFailure(
            receiving.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, receiving.UNKNOWN_PAYMENT_DETAILS
        ) from None
    with node.lock:
        channels.settle_htlc(out, args["payment_hash"], True)
        channels.receive(into, args["amount_msat"] + args["fee_msat"])
        node.save()
    return {"payment_preimage": preimage}


def setchannel(node: Node, request: Request) -> dict[str, Any]:
    """CLN's `setchannel` for the fees: `id` is a peer id or a short channel id."""
    args = request.args
    with node.lock:
        found = [
            c
            for c in node.state.channels
            if args["id"] in ("all", c.peer_id, c.short_channel_id, c.channel_id)
        ]
        if not found:
            raise RpcFailure(
                INVALID_PARAMS, "Could not find any active channels of peer with that id"
            )
        for channel in found:
            if args["feebase"] is not None:
                channel.fee_base_msat = args["feebase"]
            if args["feeppm"] is not None:
                channel.fee_ppm = args["feeppm"]
        node.save()
        return {"channels": [_setting(channel) for channel in found]}


def _setting(channel: Channel) -> dict[str, Any]:
    maximum = channel.total_msat * channels.HTLC_MAXIMUM_PER_MILLION // 1_000_000
    return {
        "peer_id": channel.peer_id,
        "channel_id": channel.channel_id,
        "short_channel_id": channel.short_channel_id,
        "fee_base_msat": channel.fee_base_msat,
        "fee_proportional_millionths": channel.fee_ppm,
        "minimum_htlc_out_msat": 0,
        "maximum_htlc_out_msat": maximum,
        "ignore_fee_limits": True,
    }


COMMANDS = {
    "setchannel": Command(
        [
            required("id", string),
            optional("feebase", msat),
            optional("feeppm", u32),
            optional("htlcmin", msat),
            optional("htlcmax", msat),
            optional("enforcedelay", u32),
            optional("ignorefeelimits", boolean),
        ],
        setchannel,
    ),
    "dev-double-forward": Command(
        [
            required("payment_hash", string),
            required("amount_msat", msat),
            required("fee_msat", msat),
            required("payment_secret", string),
            required("sender", node_id),
            required("short_channel_id", string),
        ],
        forward,
    ),
}
