"""Channel balances and how `listpeerchannels` and `listfunds` show them.

Figures follow the recorded 1,000,000-sat regtest channel (transcript, `listpeerchannels`): a 1%
reserve each side, 4,291,000 msat kept back by the opener for commitment fees, so 985,709,000 msat
spendable out of 1,000,000,000. A payment in flight is an offered HTLC: it leaves the payer's
balance at once and reaches the other side when it settles, or comes back when it fails.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

from pyln.proto.bech32 import CHARSET, bech32_hrp_expand, bech32_polymod, convertbits

from tests.lightningd.state import Channel

COMMITMENT_FEE_ALLOWANCE_MSAT = 4_291_000
RESERVE_PER_MILLION = 10_000
HTLC_MAXIMUM_PER_MILLION = 990_000
FEE_BASE_MSAT = 1
FEE_PROPORTIONAL_MILLIONTHS = 10
CHANNEL_TYPE = {"bits": [12, 22], "names": ["static_remotekey/even", "anchors/even"]}
UNLIMITED_IN_FLIGHT_MSAT = 18446744073709551615
BECH32M_CONSTANT = 0x2BC830A3
COUNTERS = (
    "in_payments_offered",
    "in_offered_msat",
    "in_payments_fulfilled",
    "in_fulfilled_msat",
    "out_payments_offered",
    "out_offered_msat",
    "out_payments_fulfilled",
    "out_fulfilled_msat",
)


def reserve(channel: Channel) -> int:
    return channel.total_msat * RESERVE_PER_MILLION // 1_000_000


def in_flight_msat(channel: Channel) -> int:
    return sum(int(htlc["amount_msat"]) for htlc in channel.htlcs)


def their_msat(channel: Channel) -> int:
    return channel.total_msat - channel.to_us_msat - in_flight_msat(channel)


def spendable(channel: Channel) -> int:
    allowance = COMMITMENT_FEE_ALLOWANCE_MSAT if channel.opener == "local" else 0
    return max(0, channel.to_us_msat - reserve(channel) - allowance)


def receivable(channel: Channel) -> int:
    allowance = COMMITMENT_FEE_ALLOWANCE_MSAT if channel.opener == "remote" else 0
    return max(0, their_msat(channel) - reserve(channel) - allowance)


def offer_htlc(channel: Channel, amount_msat: int, payment_hash: str, expiry: int) -> None:
    """An outgoing HTLC: the amount leaves our balance while it is in flight."""
    _move(channel, -amount_msat)
    channel.htlcs.append(
        {
            "direction": "out",
            "id": _count(channel, "out_payments_offered") - 1,
            "amount_msat": amount_msat,
            "expiry": expiry,
            "payment_hash": payment_hash,
            "state": "SENT_ADD_ACK_REVOCATION",
        }
    )
    _add(channel, "out_offered_msat", amount_msat)


def settle_htlc(channel: Channel, payment_hash: str, fulfilled: bool) -> None:
    """The HTLC resolves: fulfilled, it stays with the peer; failed, it comes back."""
    htlc = next(h for h in channel.htlcs if h["payment_hash"] == payment_hash)
    channel.htlcs.remove(htlc)
    if fulfilled:
        _count(channel, "out_payments_fulfilled")
        _add(channel, "out_fulfilled_msat", int(htlc["amount_msat"]))
    else:
        _move(channel, int(htlc["amount_msat"]))


def receive(channel: Channel, amount_msat: int) -> None:
    """An incoming HTLC that we fulfil at once (we are the payee)."""
    _move(channel, amount_msat)
    for counter in ("in_payments_offered", "in_payments_fulfilled"):
        _count(channel, counter)
    for counter in ("in_offered_msat", "in_fulfilled_msat"):
        _add(channel, counter, amount_msat)


def _move(channel: Channel, amount_msat: int) -> None:
    channel.to_us_msat += amount_msat
    channel.min_to_us_msat = min(channel.min_to_us_msat, channel.to_us_msat)
    channel.max_to_us_msat = max(channel.max_to_us_msat, channel.to_us_msat)


def _count(channel: Channel, counter: str) -> int:
    channel.counters[counter] = channel.counters.get(counter, 0) + 1
    return channel.counters[counter]


def _add(channel: Channel, counter: str, amount: int) -> None:
    channel.counters[counter] = channel.counters.get(counter, 0) + amount


def new_channel(
    *,
    peer_id: str,
    peer_rpc_file: str,
    opener: str,
    total_msat: int,
    to_us_msat: int,
    pushed_msat: int,
    opened_at: str,
    ids: dict[str, str] | None = None,
    private: bool = False,
) -> Channel:
    """A channel with fresh ids, or with the `ids` its opener chose (`funding_txid`, ...)."""
    ids = ids or {}
    funding_txid = ids.get("funding_txid") or secrets.token_hex(32)
    return Channel(
        peer_id=peer_id,
        peer_rpc_file=peer_rpc_file,
        # CLN's channel id: the funding txid in wire order, xor the output index (0 here).
        channel_id=bytes.fromhex(funding_txid)[::-1].hex(),
        funding_txid=funding_txid,
        short_channel_id=ids.get("short_channel_id") or f"{103 + secrets.randbelow(50)}x1x0",
        opener=opener,
        total_msat=total_msat,
        to_us_msat=to_us_msat,
        pushed_msat=pushed_msat,
        local_alias=ids.get("local_alias") or _fake_scid(),
        remote_alias=ids.get("remote_alias") or _fake_scid(),
        opened_at=opened_at,
        min_to_us_msat=to_us_msat,
        max_to_us_msat=to_us_msat,
        private=private,
        fee_base_msat=FEE_BASE_MSAT,
        fee_ppm=FEE_PROPORTIONAL_MILLIONTHS,
    )


def _fake_scid() -> str:
    return f"{secrets.randbelow(2**24)}x{secrets.randbelow(2**24)}x{secrets.randbelow(2**16)}"


def peer_listing(channel: Channel, our_id: str, connected: bool, hrp: str) -> dict[str, Any]:
    """A `listpeerchannels` entry with every field the recorded node showed."""
    close_to_addr, close_to = address(hrp, "close:" + channel.channel_id)
    entry: dict[str, Any] = {
        "peer_id": channel.peer_id,
        "peer_connected": connected,
        "reestablished": connected,
        "channel_type": CHANNEL_TYPE,
        "ignore_fee_limits": True,
        "updates": {"local": _local_updates(channel)},
        "state": "CHANNELD_NORMAL",
        "scratch_txid": hashlib.sha256(b"scratch" + channel.funding_txid.encode()).hexdigest(),
        "last_tx_fee_msat": 1735000,
        "lost_state": False,
        "feerate": {"perkw": 1250, "perkb": 5000},
        "owner": "channeld",
        "short_channel_id": channel.short_channel_id,
        "direction": 0 if our_id < channel.peer_id else 1,
        "channel_id": channel.channel_id,
        "funding_txid": channel.funding_txid,
        "funding_outnum": 0,
        "close_to_addr": close_to_addr,
        "close_to": close_to,
        "private": channel.private,
        "opener": channel.opener,
        "alias": {"local": channel.local_alias, "remote": channel.remote_alias},
        "features": ["option_static_remotekey", "option_anchors"],
        "funding": _funding(channel),
    }
    entry.update(_balances(channel))
    entry.update(_limits(channel, connected))
    entry.update({name: channel.counters.get(name, 0) for name in COUNTERS})
    entry["htlcs"] = [dict(htlc) for htlc in channel.htlcs]
    return entry


def _local_updates(channel: Channel) -> dict[str, int]:
    return {
        "htlc_minimum_msat": 0,
        "htlc_maximum_msat": channel.total_msat * HTLC_MAXIMUM_PER_MILLION // 1_000_000,
        "cltv_expiry_delta": 6,
        "fee_base_msat": channel.fee_base_msat,
        "fee_proportional_millionths": channel.fee_ppm,
    }


def _funding(channel: Channel) -> dict[str, Any]:
    opened_by_us = channel.opener == "local"
    ours = channel.total_msat - channel.pushed_msat if opened_by_us else channel.pushed_msat
    return {
        "local_funds_msat": ours,
        "remote_funds_msat": channel.total_msat - ours,
        "pushed_msat": channel.pushed_msat,
        "psbt": base64.b64encode(b"psbt\xff" + bytes.fromhex(channel.funding_txid)).decode(),
        "withheld": False,
    }


def _balances(channel: Channel) -> dict[str, Any]:
    our_reserve = reserve(channel)
    return {
        "to_us_msat": channel.to_us_msat,
        "min_to_us_msat": channel.min_to_us_msat,
        "max_to_us_msat": channel.max_to_us_msat,
        "total_msat": channel.total_msat,
        "fee_base_msat": channel.fee_base_msat,
        "fee_proportional_millionths": channel.fee_ppm,
        "dust_limit_msat": 546000,
        "their_max_htlc_value_in_flight_msat": UNLIMITED_IN_FLIGHT_MSAT,
        "our_max_htlc_value_in_flight_msat": UNLIMITED_IN_FLIGHT_MSAT,
        "their_reserve_msat": our_reserve,
        "our_reserve_msat": our_reserve,
        "spendable_msat": spendable(channel),
        "receivable_msat": receivable(channel),
    }


def _limits(channel: Channel, connected: bool) -> dict[str, Any]:
    status = "Channel ready for use." if connected else "Will attempt reconnect in 1 seconds"
    return {
        "minimum_htlc_in_msat": 0,
        "minimum_htlc_out_msat": 0,
        "maximum_htlc_out_msat": channel.total_msat * HTLC_MAXIMUM_PER_MILLION // 1_000_000,
        "their_to_self_delay": 6,
        "our_to_self_delay": 6,
        "max_accepted_htlcs": 483,
        "state_changes": [
            {
                "timestamp": channel.opened_at,
                "old_state": "CHANNELD_AWAITING_LOCKIN",
                "new_state": "CHANNELD_NORMAL",
                "cause": "user" if channel.opener == "local" else "remote",
                "message": "Lockin complete",
            }
        ],
        "status": [f"CHANNELD_NORMAL:{status}"],
    }


def funds_listing(channel: Channel, connected: bool) -> dict[str, Any]:
    """A `listfunds` channel entry (transcript, `listfunds`)."""
    return {
        "peer_id": channel.peer_id,
        "connected": connected,
        "state": "CHANNELD_NORMAL",
        "channel_id": channel.channel_id,
        "short_channel_id": channel.short_channel_id,
        "our_amount_msat": channel.to_us_msat,
        "amount_msat": channel.total_msat,
        "funding_txid": channel.funding_txid,
        "funding_output": 0,
    }


def address(hrp: str, seed: str) -> tuple[str, str]:
    """A taproot address and its script, as CLN v26.06 hands out (`bcrt1p...`, `5120...`).

    The key is made up from `seed`; the address is well-formed (BIP-350 bech32m).
    """
    key = hashlib.sha256(seed.encode()).digest()
    words = bytes([1, *convertbits(key, 8, 5)])
    polymod = bech32_polymod(bech32_hrp_expand(hrp) + words + bytes(6)) ^ BECH32M_CONSTANT
    checksum = bytes((polymod >> 5 * (5 - i)) & 31 for i in range(6))
    return hrp + "1" + "".join(CHARSET[w] for w in words + checksum), "5120" + key.hex()
