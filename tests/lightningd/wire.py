"""lightningd's JSON-RPC over a unix socket, framed exactly as pyln-client 26.6.9 uses it.

pyln-client (`UnixDomainSocketRpc.call`) opens a connection per call and writes one JSON object
with no terminator; when notifications are wanted it first sends a `notifications` request on the
same connection. It reads until a blank line (`_readobj` splits on `b"\\n\\n"`), so every answer is
one JSON object followed by `"\\n\\n"`, as lightningd writes it. A request may carry `filter`,
which trims the result the way lightningd does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lightningd.errors import LIGHTNINGD, RpcFailure

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
UNIX_PATH_LIMIT = 100


@dataclass
class Call:
    """One request being answered; a handler may answer early or drop the connection."""

    method: str
    params: Any
    request_id: Any
    connection: socket.socket
    answered: bool = False
    dropped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_error(self, failure: RpcFailure) -> None:
        """Answer now with an error, while the handler carries on (xpay dying mid-payment)."""
        self._send({"jsonrpc": "2.0", "id": self.request_id, "error": failure.as_error()})

    def drop(self) -> None:
        """Close the connection without answering, as a crashing node would."""
        with self.lock:
            if not self.answered and not self.dropped:
                self.dropped = True
                _close(self.connection)

    def _send(self, response: dict[str, Any]) -> None:
        with self.lock:
            if self.answered or self.dropped:
                return
            self.answered = True
            payload = json.dumps(response, ensure_ascii=False).encode() + b"\n\n"
            # If the caller has gone, lightningd carries on all the same.
            with contextlib.suppress(OSError):
                self.connection.sendall(payload)


Dispatcher = Callable[[Call], dict[str, Any]]


class RpcServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A lightning-rpc socket; each connection is served in its own thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, dispatch: Dispatcher) -> None:
        self.dispatch = dispatch
        self.rpc_path = path
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(str(path), _Connection)

    def close_connections(self) -> None:
        """Cut every open connection, as a stopping lightningd does."""
        with self.connections_lock:
            for connection in list(self.open_connections):
                _close(connection)
            self.open_connections.clear()

    def server_bind(self) -> None:
        """Bind, even where the path is longer than a unix socket address may be."""
        if len(str(self.rpc_path)) < UNIX_PATH_LIMIT:
            super().server_bind()
            return
        # As pyln-client does to connect: reach the directory through /proc/self/fd.
        directory = os.open(self.rpc_path.parent, os.O_DIRECTORY | os.O_RDONLY)
        try:
            self.socket.bind(f"/proc/self/fd/{directory}/{self.rpc_path.name}")
        finally:
            os.close(directory)
        self.server_address = str(self.rpc_path)


class _Connection(socketserver.BaseRequestHandler):
    server: RpcServer

    def handle(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.add(self.request)
        try:
            self._serve()
        finally:
            with self.server.connections_lock:
                self.server.open_connections.discard(self.request)

    def _serve(self) -> None:
        buffer = b""
        while True:
            request, buffer = read_request(self.request, buffer)
            if request is None:
                return
            call = Call(
                method=str(request.get("method")),
                params=request.get("params", {}),
                request_id=request.get("id"),
                connection=self.request,
            )
            answer(call, self.server.dispatch, request.get("filter"))
            if call.dropped:
                return


def answer(call: Call, dispatch: Dispatcher, filter_spec: Any) -> None:
    """Run the call and answer it (unless a fault answered or dropped it already)."""
    try:
        result = dispatch(call)
    except RpcFailure as failure:
        call.answer_error(failure)
        return
    except Exception as bug:
        # A fault of the double itself: say so loudly rather than hang up.
        logger.exception("lightningd double failed on %s", call.method)
        call.answer_error(RpcFailure(LIGHTNINGD, f"lightningd double failed: {bug!r}"))
        return
    if filter_spec is not None:
        result = apply_filter(result, filter_spec)
    call._send({"jsonrpc": "2.0", "id": call.request_id, "result": result})


def read_request(connection: socket.socket, buffer: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """The next JSON object on the connection, decoded as it arrives (no terminator)."""
    while True:
        request, buffer = _decode_one(buffer)
        if request is not None:
            return request, buffer
        if len(buffer) > MAX_REQUEST_BYTES:
            return None, b""
        try:
            chunk = connection.recv(65536)
        except OSError:
            return None, b""
        if not chunk:
            return None, b""
        buffer += chunk


def _decode_one(buffer: bytes) -> tuple[dict[str, Any] | None, bytes]:
    text = buffer.lstrip()
    if not text:
        return None, b""
    try:
        decoded = text.decode()
        request, end = json.JSONDecoder().raw_decode(decoded)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, text  # not all of it yet
    if not isinstance(request, dict):
        return {"method": None, "id": None}, decoded[end:].encode()
    return request, decoded[end:].encode()


def apply_filter(value: Any, spec: Any) -> Any:
    """lightningd's `filter`: keep the members marked `true`, arrays filtered member-wise."""
    if spec is True:
        return value
    if isinstance(spec, dict) and isinstance(value, dict):
        return {key: apply_filter(value[key], spec[key]) for key in spec if key in value}
    if isinstance(spec, list) and spec and isinstance(value, list):
        return [apply_filter(item, spec[0]) for item in value]
    return value


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
