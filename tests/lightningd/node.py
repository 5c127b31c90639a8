"""One double node: its state, its lock, and how a request reaches a command."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyln.client.lightning import UnixSocket

from tests.lightningd.errors import METHOD_NOT_FOUND, RpcFailure
from tests.lightningd.faults import Fault, Faults
from tests.lightningd.invoices import CURRENCIES
from tests.lightningd.params import Param, parse_params
from tests.lightningd.state import Channel, NodeState
from tests.lightningd.wire import Call

ONCHAIN_HRP = {
    "bitcoin": "bc",
    "testnet": "tb",
    "testnet4": "tb",
    "signet": "tb",
    "regtest": "bcrt",
}


@dataclass(frozen=True)
class RoutingFee:
    """What a payment costs on top of its amount: `base_msat + amount * ppm / 1e6`.

    The recorded payments went over one direct channel and cost nothing, so the default is 0;
    a fee makes payments look routed through one more hop.
    """

    base_msat: int = 0
    ppm: int = 0

    def of(self, amount_msat: int) -> int:
        return self.base_msat + amount_msat * self.ppm // 1_000_000


@dataclass
class Request:
    call: Call
    args: dict[str, Any]
    fault: Fault | None


Runner = Callable[["Node", Request], dict[str, Any]]
Checker = Callable[["Node", dict[str, Any]], None]


@dataclass(frozen=True)
class Command:
    params: Sequence[Param]
    run: Runner
    check: Checker | None = None
    allow_extra: bool = False


class Node:
    """State and behaviour shared by every command of one double."""

    def __init__(
        self,
        lightning_dir: Path,
        network: str,
        alias: str,
        routing_fee: RoutingFee,
        onchain_sat: int,
        commands: dict[str, Command],
    ) -> None:
        if network not in CURRENCIES:
            raise ValueError(f"unknown network {network!r}; choose from {sorted(CURRENCIES)}")
        self.lightning_dir = lightning_dir
        self.network = network
        self.routing_fee = routing_fee
        self.faults = Faults()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.closed = False
        self.released: set[str] = set()  # payment hashes a `held` fault may now complete
        self.commands = commands
        loaded = NodeState.load(lightning_dir)
        self.state = loaded or NodeState.new(alias, onchain_sat * 1000)
        self.node_id = self.state.node_id

    @property
    def rpc_file(self) -> Path:
        return self.lightning_dir / "lightning-rpc"

    @property
    def secret(self) -> bytes:
        return bytes.fromhex(self.state.secret)

    @property
    def currency(self) -> str:
        return CURRENCIES[self.network]

    @property
    def onchain_hrp(self) -> str:
        return ONCHAIN_HRP[self.network]

    def now(self) -> int:
        return int(time.time())

    def save(self) -> None:
        """Call with the lock held, after every change."""
        self.state.save(self.lightning_dir)

    def channel_with(self, peer_id: str) -> Channel | None:
        return next((c for c in self.state.channels if c.peer_id == peer_id), None)

    def dispatch(self, call: Call) -> dict[str, Any]:
        command = self.commands.get(call.method)
        if command is None:
            raise RpcFailure(METHOD_NOT_FOUND, f"Unknown command '{call.method}'")
        fault = None if call.method.startswith("dev-") else self.faults.take(call.method)
        if fault is not None and fault.name == "drop" and not fault.options.get("paid"):
            call.drop()
            return {}
        try:
            args = parse_params(command.params, call.params, command.allow_extra)
            return command.run(self, Request(call, args, fault))
        finally:
            if fault is not None:
                _after(fault, call)

    def check(self, name: str, params: Any) -> None:
        """`check`: everything the command would refuse is refused, nothing is done."""
        command = self.commands.get(name)
        if command is None or name.startswith("dev-"):
            raise RpcFailure(METHOD_NOT_FOUND, f"Unknown command '{name}'")
        args = parse_params(command.params, params)
        if command.check is not None:
            command.check(self, args)


def _after(fault: Fault, call: Call) -> None:
    if fault.name == "slow":
        time.sleep(float(fault.option("seconds")))
    elif fault.name == "drop":
        call.drop()


def peer_reachable(rpc_file: str) -> bool:
    """A peer counts as connected while its lightning-rpc socket accepts connections."""
    try:
        UnixSocket(rpc_file).close()
    except OSError:
        return False
    return True
