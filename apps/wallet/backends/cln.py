"""Core Lightning over its JSON-RPC unix socket (pyln-client), or over CLNRest (`clnrest.py`).

`call` is the wallet's one way to the node: CLNRest when SOVEREIGN_LIGHTNING_REST_URL is set,
else the socket. Both raise the same exceptions (`base.py`) for the same situations.

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

from apps.wallet.backends import clnrest
from apps.wallet.backends.base import (
    METHODS_CALLED,
    NodeMissing,
    NodeRefused,
    NodeSilent,
    RuneRefused,
)

__all__ = [
    "METHODS_CALLED",
    "NodeMissing",
    "NodeRefused",
    "NodeSilent",
    "RuneRefused",
    "call",
    "configured",
    "node_key",
]

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


def socket_path() -> Path | None:
    return Path(settings.LIGHTNING_RPC) if settings.LIGHTNING_RPC else None


def configured() -> bool:
    """A node is set up, over either backend (it may still not answer)."""
    return bool(settings.LIGHTNING_REST_URL or settings.LIGHTNING_RPC)


def node_key() -> str:
    """Which node the settings point at: what caches about "the node" are keyed by."""
    if settings.LIGHTNING_REST_URL:
        return f"rest:{settings.LIGHTNING_REST_URL}"
    return f"socket:{settings.LIGHTNING_RPC}" if settings.LIGHTNING_RPC else ""


def call(method: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
    """One call to the node; raises NodeMissing (or RuneRefused), NodeSilent or NodeRefused."""
    deadline = timeout or settings.LIGHTNING_TIMEOUT
    if settings.LIGHTNING_REST_URL:
        return clnrest.call(clnrest.configured_node(), method, deadline, params)
    path = socket_path()
    if path is None:
        raise NodeMissing(
            "No Lightning node is connected (set SOVEREIGN_LIGHTNING_RPC or "
            "SOVEREIGN_LIGHTNING_REST_URL)."
        )
    return call_socket(path, method, deadline, params)


def call_socket(path: Path, method: str, timeout: float, params: dict[str, Any]) -> dict[str, Any]:
    """One JSON-RPC call over the socket at `path`."""
    if not path.exists():
        raise NodeMissing(f"The Lightning node's socket is not there ({path.name}).")
    rpc = _DeadlineRpc(str(path), timeout)
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
