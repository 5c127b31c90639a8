"""Core Lightning over its JSON-RPC unix socket, through pyln-client.

Every call has a deadline (a timeout on the socket pyln-client reads the answer from): past
it the caller learns the outcome is unknown (`NodeSilent`), never that it failed.
pyln-client logs whole payloads and answers at DEBUG (preimages among them), so it gets a
logger of its own that never logs below WARNING.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from pyln.client import LightningRpc, RpcError

_quiet = logging.getLogger("sovereign.wallet.rpc")
_quiet.setLevel(logging.WARNING)


class _DeadlineRpc(LightningRpc):  # type: ignore[misc]
    """pyln-client's client, with a timeout on the wait for each part of the answer."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(path, logger=_quiet)
        self.timeout = timeout

    def _readobj(self, sock: Any, buff: bytes = b"") -> Any:
        if sock.sock is not None:
            sock.sock.settimeout(self.timeout)
        return super()._readobj(sock, buff)


class NodeMissing(Exception):
    """No node is configured, or nothing listens on its socket: nothing was asked."""


class NodeSilent(Exception):
    """The request may have reached the node but no answer came: the outcome is unknown."""


class NodeRefused(Exception):
    """The node answered with an error: `code` and `message` as Core Lightning gives them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def socket_path() -> Path | None:
    return Path(settings.LIGHTNING_RPC) if settings.LIGHTNING_RPC else None


def call(method: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
    """One JSON-RPC call; raises NodeMissing, NodeSilent or NodeRefused."""
    path = socket_path()
    if path is None:
        raise NodeMissing("No Lightning node is connected (set SOVEREIGN_LIGHTNING_RPC).")
    if not path.exists():
        raise NodeMissing(f"The Lightning node's socket is not there ({path.name}).")
    rpc = _DeadlineRpc(str(path), timeout or settings.LIGHTNING_TIMEOUT)
    try:
        result: dict[str, Any] = rpc.call(method, params)
    except TimeoutError:
        raise NodeSilent(f"The node did not answer {method} in time.") from None
    except RpcError as error:  # never str(error): it holds the whole payload
        if not isinstance(error.error, dict):  # pyln's "Connection to RPC server lost."
            raise NodeSilent(f"The connection to the node broke during {method}.") from None
        raise NodeRefused(
            int(error.error.get("code", -1)), str(error.error.get("message"))
        ) from None
    except (ConnectionRefusedError, FileNotFoundError):  # nothing was sent
        raise NodeMissing("The Lightning node is not answering on its socket.") from None
    except (OSError, ValueError):  # a dropped connection, or half an answer
        raise NodeSilent(f"The connection to the node broke during {method}.") from None
    return result
