"""HTTP connections that dial where they were checked, not where a name points next time.

Whoever makes one gives the `dial`: it resolves the name, checks the addresses by its own
rule (public only, say, or not the node's own port) and returns a socket connected to one
of those very addresses, so the name cannot change its answer between check and connection.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from typing import Any

# (host, port, timeout) -> a socket connected to an address that passed the caller's check
Dial = Callable[[str, int, float | None], socket.socket]


class PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, *, dial: Dial, **options: Any) -> None:
        super().__init__(host, **options)
        self.dial = dial

    def connect(self) -> None:
        self.sock = self.dial(self.host, self.port, self.timeout)


class PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, *, dial: Dial, **options: Any) -> None:
        super().__init__(host, **options)
        self.dial = dial

    def connect(self) -> None:
        raw = self.dial(self.host, self.port, self.timeout)
        # The certificate is checked against the name, as usual.
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]
