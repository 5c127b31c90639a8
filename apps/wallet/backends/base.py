"""What a call to Core Lightning can end in, whichever way the wallet reaches the node.

Both backends (the JSON-RPC socket, `cln.py`, and CLNRest, `clnrest.py`) raise exactly these,
so the rest of the wallet never knows which one answered.
"""

from __future__ import annotations

# Every method the wallet calls on the node: the rune `manage.py wallet rune` makes allows
# exactly these (tests/wallet/test_clnrest.py checks the list against the code).
METHODS_CALLED = (
    "decode",
    "getinfo",
    "invoice",
    "listinvoices",
    "listpays",
    "listpeerchannels",
    "listsendpays",
    "xpay",
)


class NodeMissing(Exception):
    """No node is configured, or nothing listens where it should: nothing was asked."""


class RuneRefused(NodeMissing):
    """CLNRest refused the rune before calling the node: nothing was done.

    A NodeMissing, so a refused rune is never taken for a failed payment: the wallet says the
    node cannot be reached, and the System page shows why.
    """


class NodeSilent(Exception):
    """The request may have reached the node but no answer came: the outcome is unknown."""


class NodeRefused(Exception):
    """The node answered with an error: `code` and `message` as Core Lightning gives them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
