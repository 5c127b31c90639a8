"""Finding the way to the payee: the direct channel, or the reasons xpay gives for none.

A double pays only over its own channels (doubles announce nothing, so there is no gossip to
route by); the refusals are askrene's, word for word (`plugins/askrene/explain_failure.c`), and
the recorded ones (transcript: beyond capacity, payee offline) come out exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.lightningd import channels
from tests.lightningd.errors import (
    NO_USABLE_PATHS,
    PAY_ROUTE_NOT_FOUND,
    PAY_ROUTE_TOO_EXPENSIVE,
    RpcFailure,
)
from tests.lightningd.node import Node, peer_reachable
from tests.lightningd.state import Channel


@dataclass(frozen=True)
class Route:
    """The one hop to the payee (None when paying ourselves) and what it costs."""

    channel: Channel | None
    fee_msat: int


def plan_route(node: Node, payee: str, amount_msat: int, maxfee_msat: int) -> Route:
    """The direct channel to the payee, or askrene's reasons why not (`explain_failure.c`)."""
    if payee == node.node_id:
        return Route(None, 0)
    channel = node.channel_with(payee)
    if channel is None:
        raise RpcFailure(PAY_ROUTE_NOT_FOUND, f"Failed: Unknown destination node {payee}")
    fee = node.routing_fee.of(amount_msat)
    _check_source_capacity(node, amount_msat + fee)
    _check_channel(node, channel, amount_msat + fee)
    if fee > maxfee_msat:
        raise RpcFailure(
            PAY_ROUTE_TOO_EXPENSIVE, "Failed: Could not find route without excessive cost"
        )
    return Route(channel, fee)


def no_route(detail: str) -> RpcFailure:
    return RpcFailure(PAY_ROUTE_NOT_FOUND, f"Failed: {NO_USABLE_PATHS} {detail}")


def _check_source_capacity(node: Node, amount: int) -> None:
    """Transcript: "Total source capacity is only ...", and "All 1 channels ... disabled"."""
    every = node.state.channels
    total = sum(c.total_msat for c in every)
    if amount > total:
        raise no_route(f"Total source capacity is only {total}msat (in {len(every)} channels).")
    known = sum(channels.spendable(c) for c in every)
    if amount > known:
        raise no_route(
            "We know from layer auto.localchans that source has maximum capacity"
            f" {known}msat (in {len(every)} channels)."
        )
    enabled = [c for c in every if peer_reachable(c.peer_rpc_file)]
    capacity = sum(c.total_msat for c in enabled)
    if amount > capacity and not enabled:
        raise no_route(f"All {len(every)} channels to the source are disabled.")
    if amount > capacity:
        raise no_route(
            f"{len(every) - len(enabled)} of {len(every)} channels to source are disabled,"
            f" leaving capacity only {capacity}msat of {total}msat."
        )


def _check_channel(node: Node, channel: Channel, amount: int) -> None:
    direction = 0 if node.node_id < channel.peer_id else 1
    shortest = f"The shortest path is {channel.short_channel_id}, but"
    scidd = f"{channel.short_channel_id}/{direction}"
    if not peer_reachable(channel.peer_rpc_file):
        raise no_route(f"{shortest} {scidd} marked disabled by gossip message.")
    if amount > channels.spendable(channel):
        raise no_route(
            f"{shortest} {scidd} layer auto.localchans says max is"
            f" {channels.spendable(channel)}msat"
        )
