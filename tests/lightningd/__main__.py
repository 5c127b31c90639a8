"""Run a lightningd double as its own process (for tests where real processes talk to it).

    python -m tests.lightningd serve --dir D --network regtest [--alias A]
        [--fee-base-msat N] [--fee-ppm N] [--onchain-sat N] [--rest [--rest-port N]]

It serves `D/<network>/lightning-rpc` until SIGTERM or SIGINT; with `--rest`, CLNRest too (on
a free port unless given; the port is written to `D/<network>/clnrest-port`). Fault switches
are set through
the `dev-double-fault` method on that socket (`ProcessDouble.faults` does it).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tests.lightningd.double import DEFAULT_ONCHAIN_SAT, REST_PORT_FILE, LightningdDouble
from tests.lightningd.node import RoutingFee


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lightningd")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve lightning-rpc until stopped")
    serve.add_argument("--dir", required=True, type=Path, help="the lightning-dir's parent")
    serve.add_argument("--network", default="regtest")
    serve.add_argument("--alias", default="sovereign-double")
    serve.add_argument("--fee-base-msat", type=int, default=0)
    serve.add_argument("--fee-ppm", type=int, default=0)
    serve.add_argument("--onchain-sat", type=int, default=DEFAULT_ONCHAIN_SAT)
    serve.add_argument("--rest", action="store_true", help="serve CLNRest too")
    serve.add_argument("--rest-port", type=int, default=0)
    args = parser.parse_args(argv)
    double = LightningdDouble(
        args.dir,
        args.network,
        args.alias,
        routing_fee=RoutingFee(args.fee_base_msat, args.fee_ppm),
        onchain_sat=args.onchain_sat,
        rest=args.rest,
        rest_port=args.rest_port,
    )
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with double:
        if args.rest:
            (double.lightning_dir / REST_PORT_FILE).write_text(str(double.rest_port))
        while not stopping.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
