"""CLNRest, as Core Lightning v26.06's `plugins/rest-plugin` serves it, in front of a double.

HTTPS with the certificates of `certificates.py`; `POST /v1/<method>` with a JSON object of
parameters and the rune in a `Rune` header. As `handlers.rs` and `shared.rs` answer:

- no `Rune` header: 403 `{"code": 1501, "message": "Not authorized: Missing rune"}`;
- the rune checked by `checkrune` for the method and its parameters (null ones removed first,
  as `filter_json` does); a refusal is 401 with checkrune's error (1501, 1502, -32602 …);
- then the method: 201 and its result, or its error, 404 for -32601 and 500 for any other;
- GET on `/v1/<method>`: 405, -32601; another path: 404, -32601; a body that is not JSON:
  500 with code null. Only JSON bodies are modelled: YAML, XML and forms get 406.

Errors are cln-rpc's `RpcError` serialised: `{"code": ..., "message": ..., "data": ...}`.
The double's fault switches act on calls made here as on the socket: `drop` closes the TLS
connection without an answer, `slow` holds the answer back.
"""

from __future__ import annotations

import contextlib
import http
import json
import socket
import socketserver
import ssl
import threading
from pathlib import Path
from typing import Any

from tests.lightningd.errors import METHOD_NOT_FOUND, RpcFailure
from tests.lightningd.node import Node
from tests.lightningd.rune_methods import RUNE_NOT_AUTHORIZED, rune_check
from tests.lightningd.wire import Call, answer

HEADER_LIMIT = 64 * 1024
BODY_LIMIT = 16 * 1024 * 1024
READ_TIMEOUT = 30.0


def rest_url(port: int | None) -> str:
    """Where a double serves CLNRest; a double started without rest=True serves none."""
    if not port:
        raise RuntimeError("this double serves no CLNRest (start it with rest=True)")
    return f"https://127.0.0.1:{port}"


class RestServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """CLNRest on `host:port` (0: a free port), for one double's node."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, node: Node, certificates: Path, host: str = "127.0.0.1", port: int = 0):
        self.node = node
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(certificates / "server.pem", certificates / "server-key.pem")
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.requests_read = 0  # HTTP requests that got past TLS: what a test may count
        super().__init__((host, port), _RestConnection)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake, in the connection's own thread; a refused one ends it."""
        request.settimeout(READ_TIMEOUT)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            _close(request)
            return
        _RestConnection(wrapped, client_address, self)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in list(self.open_connections):
                _close(connection)
            self.open_connections.clear()


class RestCall(Call):
    """A call that came over CLNRest: its answer is an HTTP response."""

    def _send(self, response: dict[str, Any]) -> None:
        with self.lock:
            if self.answered or self.dropped:
                return
            self.answered = True
            if "error" in response:
                error = response["error"]
                status = 404 if error.get("code") == METHOD_NOT_FOUND else 500
                send_json(self.connection, status, _rpc_error(error))
            else:
                send_json(self.connection, 201, response["result"])


class _RestConnection(socketserver.BaseRequestHandler):
    server: RestServer

    def handle(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.add(self.request)
        try:
            self._serve()
        finally:
            with self.server.connections_lock:
                self.server.open_connections.discard(self.request)
            _close(self.request)

    def _serve(self) -> None:
        request = read_http_request(self.request)
        if request is None:
            return
        with self.server.connections_lock:
            self.server.requests_read += 1
        verb, path, headers, body = request
        try:
            method, params = _route(verb, path, headers, body)
            rune = headers.get("rune")
            if rune is None:
                raise _Refusal(403, RUNE_NOT_AUTHORIZED, "Not authorized: Missing rune")
            try:
                rune_check(self.server.node, rune, method, params)
            except RpcFailure as failure:
                raise _Refusal(401, failure.code, failure.message) from None
        except _Refusal as refusal:
            send_json(self.request, refusal.status, refusal.body())
            return
        call = RestCall(method=method, params=params, request_id=0, connection=self.request)
        answer(call, self.server.node.dispatch, None)


class _Refusal(Exception):
    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": None}


def _route(verb: str, path: str, headers: dict[str, str], body: bytes) -> tuple[str, Any]:
    """`path_to_rest_map_and_params` and `request_body_to_rpc_params`, for JSON."""
    prefix, found, method = path.lstrip("/").partition("v1/")
    if not found:
        raise _Refusal(404, METHOD_NOT_FOUND, "Path not found")
    if prefix:
        raise _Refusal(404, METHOD_NOT_FOUND, "Path invalid, version missing for CLN methods")
    if verb != "POST":
        raise _Refusal(
            405, METHOD_NOT_FOUND, "Path invalid, http_method must be POST for CLN methods"
        )
    content_type = headers.get("content-type", "application/json")
    if "application/json" not in content_type and "*/*" not in content_type:
        raise _Refusal(406, None, f"Unsupported content-type header: {content_type}")
    if not body:
        return method, {}
    try:
        params = json.loads(body)
        if not isinstance(params, dict):
            raise ValueError("expected an object")
    except ValueError as error:
        text = body.decode(errors="replace")
        raise _Refusal(500, None, f"Could not parse `{text}` JSON request: {error}") from None
    return method, _without_nulls(params)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _rpc_error(error: dict[str, Any]) -> dict[str, Any]:
    return {"code": error.get("code"), "message": error.get("message"), "data": error.get("data")}


def read_http_request(
    connection: socket.socket,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request: verb, path, headers (lower-case names) and body; None if cut."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data and len(data) < HEADER_LIMIT:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        length = min(int(headers.get("content-length") or 0), BODY_LIMIT)
    except ValueError:
        return None
    with contextlib.suppress(OSError):
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            body += chunk
    return parts[0], parts[1], headers, body[:length]


def send_json(connection: socket.socket, status: int, body: Any) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    # If the caller has gone, the node carries on all the same.
    with contextlib.suppress(OSError):
        connection.sendall(head + payload)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()
