"""A lightningd double in its own process, for tests whose real processes talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pyln.client import LightningRpc

from tests.lightningd.control import DEFAULT_CHANNEL_SAT
from tests.lightningd.double import DEFAULT_ONCHAIN_SAT, REST_PORT_FILE, open_channel
from tests.lightningd.node import RoutingFee
from tests.lightningd.rest import rest_url

ROOT = Path(__file__).resolve().parent.parent.parent
START_TIMEOUT = 30.0


class RemoteFaults:
    """The fault switches of a double in another process, set through `dev-double-fault`."""

    def __init__(self, rpc_file: Path) -> None:
        self.rpc_file = rpc_file

    def next_xpay(self, name: str, **options: Any) -> None:
        self.next_call("xpay", name, **options)

    def next_call(self, method: str, name: str, **options: Any) -> None:
        self._control({"method": method, "fault": name, "options": options})

    def clear(self) -> None:
        self._control({"clear": True})

    def queued(self) -> list[dict[str, Any]]:
        return list(self._control({})["queued"])

    def _control(self, params: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = LightningRpc(str(self.rpc_file)).call("dev-double-fault", params)
        return answer


class ProcessDouble:
    """`python -m tests.lightningd serve`, started and stopped like a node.

    Same surface as `LightningdDouble`: `rpc_file`, `rpc`, `node_id`, `faults`, `connect`, and
    with `rest=True` `rest_url` and `ca_file` (CLNRest keeps its port across restarts).
    `kill()` stops it without warning; `start()` again brings the same node back.
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
    ) -> None:
        self.directory = Path(directory)
        self.network = network
        self.rest = rest
        self.rest_port = 0
        self.alias = alias
        self.routing_fee = routing_fee or RoutingFee()
        self.onchain_sat = onchain_sat
        self.process: subprocess.Popen[bytes] | None = None
        self.node_id = ""

    @property
    def rpc_file(self) -> Path:
        return self.directory / self.network / "lightning-rpc"

    @property
    def rpc(self) -> LightningRpc:
        return LightningRpc(str(self.rpc_file))

    @property
    def rest_url(self) -> str:
        return rest_url(self.rest_port)

    @property
    def ca_file(self) -> Path:
        return self.directory / self.network / "ca.pem"

    @property
    def faults(self) -> RemoteFaults:
        return RemoteFaults(self.rpc_file)

    def start(self) -> ProcessDouble:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / self.network / REST_PORT_FILE).unlink(missing_ok=True)
        log = (self.directory / "double.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.lightningd", "serve", *self._arguments()],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.node_id = str(self._wait_until_answering()["id"])
        if self.rest:
            self.rest_port = self._wait_for_rest_port()
        return self

    def _wait_for_rest_port(self) -> int:
        port_file = self.directory / self.network / REST_PORT_FILE
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text())
            time.sleep(0.05)
        raise RuntimeError(f"the double served no CLNRest within {START_TIMEOUT} s")

    def _arguments(self) -> list[str]:
        return [
            f"--dir={self.directory}",
            f"--network={self.network}",
            f"--alias={self.alias}",
            f"--fee-base-msat={self.routing_fee.base_msat}",
            f"--fee-ppm={self.routing_fee.ppm}",
            f"--onchain-sat={self.onchain_sat}",
            *(["--rest", f"--rest-port={self.rest_port}"] if self.rest else []),
        ]

    def _wait_until_answering(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the double exited early; see {self.directory}/double.log")
            try:
                answer: dict[str, Any] = self.rpc.getinfo()
                return answer
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the double did not answer within {START_TIMEOUT} s")

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, how)
            self.process.wait(timeout=15)
        self.process = None

    def connect(
        self,
        other: Any,
        amount_sat: int = DEFAULT_CHANNEL_SAT,
        push_msat: int = 0,
        *,
        announce: bool = True,
    ) -> str:
        return open_channel(self.rpc, other, amount_sat, push_msat, announce)

    def release(self, payment_hash: str) -> None:
        """Let a payment held by the `held` fault complete."""
        self.rpc.call("dev-double-release", {"payment_hash": payment_hash})

    def __enter__(self) -> ProcessDouble:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
