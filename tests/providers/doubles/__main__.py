"""Outside providers to try Sovereign with, on loopback, with a Lightning node to pay them.

    python -m tests.providers.doubles [--dir D]

Starts the household's Lightning node (a lightningd double, with a channel to the providers'
node), and providers that charge for answers through it: an L402 server in Aperture's shape,
an MPP server, and a free OpenAI-compatible one standing for a server on the home network.
It prints what to set and run so that `make run` pays them, and serves until Ctrl-C. Their
answers are canned (they echo the question): these are test doubles, not models.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.mpp import MPPDouble
from tests.providers.doubles.openai_shape import OpenAIShapedDouble


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.providers.doubles")
    parser.add_argument("--dir", type=Path, help="where the Lightning doubles keep their sockets")
    args = parser.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="sovereign-doubles-"))
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with (
        LightningdDouble(directory / "provider", alias="provider") as provider_node,
        LightningdDouble(directory / "household", alias="household") as household,
        L402Double(provider_node, price_msat=21_000) as l402,
        MPPDouble(provider_node, price_msat=15_000) as mpp,
        OpenAIShapedDouble() as lan,
    ):
        household.connect(provider_node, amount_sat=1_000_000)
        urls = {"l402": l402.url, "mpp": mpp.url, "openai": lan.url}
        sys.stdout.write(_instructions(household, urls) + "\n")
        sys.stdout.flush()
        while not stopping.wait(0.2):
            pass
    return 0


def _instructions(household: LightningdDouble, urls: dict[str, str]) -> str:
    manage = ".venv/bin/python manage.py"
    adds = "\n".join(
        f"  {manage} providers add {url} --kind {kind} --name demo-{kind}"
        for kind, url in urls.items()
    )
    return (
        "Providers are serving. In another shell, in the checkout:\n"
        f"  export SOVEREIGN_LIGHTNING_RPC={household.rpc_file}\n"
        f"{adds}\n"
        "  make run\n"
        "Ctrl-C here stops them."
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
