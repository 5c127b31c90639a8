"""Finding the way to the payee: the direct channel, or the reasons xpay gives for none.

A double pays only over its own channels (doubles announce nothing, so there is no gossip to
route by); the refusals are askrene's, word for word (`plugins/askrene/explain_failure.c`), and
the recorded ones (transcript: beyond capacity, payee offline) come out exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.lightningd import channels
from tests.lightningd.errors import (
    NO_USABLE_PATHS,
    PAY_ROUTE_NOT_FOUND,
    PAY_ROUTE_TOO_EXPENSIVE,
    RpcFailure,
)
from tests.lightningd.forwarding import RouteHint
from tests.lightningd.node import Node, peer_reachable
from tests.lightningd.state import Channel


@dataclass(frozen=True)
class Route:
    """Our channel toward the payee (None when paying ourselves), what the route costs, and
    the invoice's route hint when the payee is one hop further, behind a private channel."""

    channel: Channel | None
    fee_msat: int
    hint: RouteHint | None = None


def plan_route(
    node: Node, payee: str, amount_msat: int, maxfee_msat: int, hints: Sequence[Any] = ()
) -> Route:
    """The direct channel to the payee, a route hint through a peer of ours, or askrene's
    reasons why not (`explain_failure.c`)."""
    if payee == node.node_id:
        return Route(None, 0)
    channel = node.channel_with(payee)
    if channel is None:
        return _through_hint(node, payee, amount_msat, maxfee_msat, hints)
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
    """Transcript: "Total source capacity is only ...", and "All 1 channels ... disabled".

    askrene (`check_capacity`, explain_failure.c) looks at capacity and gossip here, not at
    what we can spend: an amount above spendable but within capacity is explained by the
    shortest path's channel (`_check_channel`), as the real node did (issue 10)."""
    every = node.state.channels
    total = sum(c.total_msat for c in every)
    if amount > total:
        raise no_route(f"Total source capacity is only {total}msat (in {len(every)} channels).")
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


def _through_hint(
    node: Node, payee: str, amount_msat: int, maxfee_msat: int, hints: Sequence[Any]
) -> Route:
    """Two hops: our channel to the hint's node, then its private channel to the payee. The
    hop's fee is the one the invoice carries (the payer has no fresher news of it)."""
    for route in hints:
        hint = route[0] if len(route) == 1 else None
        channel = node.channel_with(hint.pubkey) if hint is not None else None
        if hint is None or channel is None:
            continue
        fee = hint.fee_of(amount_msat)
        _check_source_capacity(node, amount_msat + fee)
        _check_channel(node, channel, amount_msat + fee)
        if fee > maxfee_msat:
            raise RpcFailure(
                PAY_ROUTE_TOO_EXPENSIVE, "Failed: Could not find route without excessive cost"
            )
        return Route(channel, fee, hint)
    raise RpcFailure(PAY_ROUTE_NOT_FOUND, f"Failed: Unknown destination node {payee}")
