"""`getinfo`, `listfunds`, `listpeerchannels` and `check`, shaped as the transcript records them."""

from __future__ import annotations

from typing import Any

from tests.lightningd import channels
from tests.lightningd.node import Command, Node, Request, peer_reachable
from tests.lightningd.params import boolean, node_id, optional, required, string

VERSION = "v26.06.6"
# The feature bits CLN v26.06.6 announces (transcript, `getinfo`).
OUR_FEATURES = {
    "init": "800898880a8a59a1",
    "node": "808898880a8a59a1",
    "channel": "",
    "invoice": "02000002024100",
}
# Funding a channel costs the opener this much on chain (the recorded wallet paid 166 sat).
FUNDING_FEE_MSAT = 166_000


def getinfo(node: Node, request: Request) -> dict[str, Any]:
    with node.lock:
        connected = [peer_reachable(c.peer_rpc_file) for c in node.state.channels]
        return {
            "id": node.node_id,
            "alias": node.state.alias,
            "color": node.node_id[:6],
            "num_peers": sum(connected),
            "num_pending_channels": 0,
            "num_active_channels": sum(connected),
            "num_inactive_channels": len(connected) - sum(connected),
            "address": [],
            "binding": [{"type": "ipv4", "address": "127.0.0.1", "port": 9735}],
            "version": VERSION,
            "blockheight": node.state.blockheight,
            "network": node.network,
            "fees_collected_msat": 0,
            "lightning-dir": str(node.lightning_dir),
            "our_features": dict(OUR_FEATURES),
        }


def listfunds(node: Node, request: Request) -> dict[str, Any]:
    with node.lock:
        address, script = channels.address(node.onchain_hrp, "wallet:" + node.node_id)
        outputs = [
            {
                "txid": node.state.onchain_txid,
                "output": 1,
                "amount_msat": node.state.onchain_msat,
                "scriptpubkey": script,
                "address": address,
                "status": "confirmed",
                "blockheight": node.state.blockheight - 5,
                "reserved": False,
            }
        ]
        return {
            "outputs": outputs if node.state.onchain_msat > 0 else [],
            "channels": [
                channels.funds_listing(c, peer_reachable(c.peer_rpc_file))
                for c in node.state.channels
            ],
        }


def listpeerchannels(node: Node, request: Request) -> dict[str, Any]:
    wanted_peer = request.args["id"]
    wanted_scid = request.args["short_channel_id"]
    wanted_channel = request.args["channel_id"]
    with node.lock:
        found = [
            channels.peer_listing(
                c, node.node_id, peer_reachable(c.peer_rpc_file), node.onchain_hrp
            )
            for c in node.state.channels
            if wanted_peer in (None, c.peer_id)
            and wanted_scid in (None, c.short_channel_id)
            and wanted_channel in (None, c.channel_id)
        ]
    return {"channels": found}


def check(node: Node, request: Request) -> dict[str, Any]:
    """Transcript, `check` on `xpay`: `{"command_to_check": "xpay"}`, nothing paid."""
    name = request.args["command_to_check"]
    params = request.call.params
    if isinstance(params, list):
        rest: Any = params[1:]
    else:
        rest = {key: value for key, value in params.items() if key != "command_to_check"}
    node.check(name, rest)
    return {"command_to_check": name}


def notifications(node: Node, request: Request) -> dict[str, Any]:
    """pyln-client's opt-in before a call made under `rpc.notify(...)`; the double sends none."""
    return {}


COMMANDS = {
    "notifications": Command([optional("enable", boolean)], notifications),
    "getinfo": Command([], getinfo),
    "listfunds": Command([optional("spent", string)], listfunds),
    "listpeerchannels": Command(
        [
            optional("id", node_id),
            optional("short_channel_id", string),
            optional("channel_id", string),
        ],
        listpeerchannels,
    ),
    "check": Command([required("command_to_check", string)], check, allow_extra=True),
}
