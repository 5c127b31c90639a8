"""`LightningdDouble`: a Core Lightning node for tests, serving lightning-rpc from a thread."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from pyln.client import LightningRpc

from tests.lightningd import (
    certificates,
    control,
    forwarding,
    info,
    listing,
    paying,
    receiving,
    rune_methods,
)
from tests.lightningd.control import DEFAULT_CHANNEL_SAT
from tests.lightningd.faults import Faults
from tests.lightningd.node import Node, RoutingFee
from tests.lightningd.rest import RestServer, rest_url
from tests.lightningd.wire import RpcServer

COMMANDS = {
    **info.COMMANDS,
    **receiving.COMMANDS,
    **paying.COMMANDS,
    **listing.COMMANDS,
    **control.COMMANDS,
    **forwarding.COMMANDS,
    **rune_methods.COMMANDS,
}
DEFAULT_ONCHAIN_SAT = 100_000_000
REST_PORT_FILE = "clnrest-port"  # where a double in its own process says its CLNRest port


class LightningdDouble:
    """A lightningd that listens on `<directory>/<network>/lightning-rpc`, the real layout.

        with LightningdDouble(tmp_path / "payer", alias="payer") as payer:
            payer.rpc.getinfo()

    Its key, invoices, payments, runes and channels persist in that directory, so a double
    started again on the same directory is the same node. `faults` holds the fault switches.

    `rest=True` also serves CLNRest (`rest.py`) on a free port of 127.0.0.1, the same port
    after a restart: `rest_url`, and `ca_file` (the CA cln-grpc makes in the lightning-dir).
    """

    def __init__(
        self,
        directory: Path,
        network: str = "regtest",
        alias: str = "sovereign-double",
        *,
        routing_fee: RoutingFee | None = None,
        onchain_sat: int = DEFAULT_ONCHAIN_SAT,
        rest: bool = False,
        rest_port: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.lightning_dir = self.directory / network
        self.lightning_dir.mkdir(parents=True, exist_ok=True)
        self.node = Node(
            self.lightning_dir, network, alias, routing_fee or RoutingFee(), onchain_sat, COMMANDS
        )
        self._server: RpcServer | None = None
        self._thread: threading.Thread | None = None
        self.rest = rest
        self.rest_port = rest_port
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None

    @property
    def rpc_file(self) -> Path:
        return self.node.rpc_file

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def faults(self) -> Faults:
        return self.node.faults

    @property
    def rpc(self) -> LightningRpc:
        """A pyln-client for this node, as the wallet will make one."""
        return LightningRpc(str(self.rpc_file))

    @property
    def rest_url(self) -> str:
        return rest_url(self.rest_port)

    @property
    def rest_requests(self) -> int:
        """How many HTTP requests CLNRest has read since this double started it."""
        return self._rest.requests_read if self._rest is not None else 0

    @property
    def ca_file(self) -> Path:
        return self.lightning_dir / "ca.pem"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> LightningdDouble:
        if self._server is not None:
            return self
        with contextlib.suppress(FileNotFoundError):
            self.rpc_file.unlink()
        self.node.closed = False
        self._server = RpcServer(self.rpc_file, self.node.dispatch)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"lightningd-double {self.node.state.alias}",
            daemon=True,
        )
        self._thread.start()
        if self.rest:
            self._start_rest()
        return self

    def _start_rest(self) -> None:
        certificates.ensure(self.lightning_dir)
        self._rest = RestServer(self.node, self.lightning_dir, port=self.rest_port)
        self.rest_port = self._rest.port
        self._rest_thread = threading.Thread(
            target=self._rest.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"clnrest-double {self.node.state.alias}",
            daemon=True,
        )
        self._rest_thread.start()

    def _stop_rest(self) -> None:
        if self._rest is None:
            return
        self._rest.shutdown()
        self._rest.server_close()
        self._rest.close_connections()
        if self._rest_thread is not None:
            self._rest_thread.join(timeout=5)
        self._rest = None
        self._rest_thread = None

    def stop(self) -> None:
        """Stop answering, as a node that goes offline; calls in progress are cut off."""
        if self._server is None:
            return
        with self.node.changed:
            self.node.closed = True
            self.node.changed.notify_all()
        self._stop_rest()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        with contextlib.suppress(FileNotFoundError):
            self.rpc_file.unlink()

    def release(self, payment_hash: str) -> None:
        """Let a payment held by the `held` fault complete."""
        self.rpc.call("dev-double-release", {"payment_hash": payment_hash})

    def connect(
        self,
        other: LightningdDouble | Any,
        amount_sat: int = DEFAULT_CHANNEL_SAT,
        push_msat: int = 0,
        *,
        announce: bool = True,
    ) -> str:
        """Open a channel of `amount_sat` from this node to `other` (both must be running).

        `other` is another double, in this process or its own, or the path of its socket.
        Returns the channel id. `announce=False` makes a private channel: `other`'s invoices
        then carry a route hint through us.
        """
        return open_channel(self.rpc, other, amount_sat, push_msat, announce)

    def __enter__(self) -> LightningdDouble:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def open_channel(
    rpc: LightningRpc, other: Any, amount_sat: int, push_msat: int, announce: bool = True
) -> str:
    """`dev-double-connect` from the node behind `rpc` to `other` (a double or a socket path)."""
    rpc_file = str(getattr(other, "rpc_file", other))
    opened = rpc.call(
        "dev-double-connect",
        {
            "rpc_file": rpc_file,
            "amount_sat": amount_sat,
            "push_msat": push_msat,
            "announce": announce,
        },
    )
    return str(opened["channel_id"])
