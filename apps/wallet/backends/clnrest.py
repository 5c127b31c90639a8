"""Core Lightning over CLNRest: `POST /v1/<method>` with JSON params and a `Rune` header.

Used where the JSON-RPC socket cannot be opened (on Umbrel it is root's, mode 0600). What
CLNRest (Core Lightning's `plugins/rest-plugin`) answers, and what each answer means here:

- 201 and the method's result: success.
- 401 (checkrune refused the rune: 1501 not ours, 1502 not permitted, 1503 blacklisted, or a
  malformed rune) and 403 (no rune): the rune is checked before the method is called, so
  nothing was done. RuneRefused, a NodeMissing, so it is never a failed payment.
- 404 with -32601 (unknown method) and 500 with a code: Core Lightning's error answer, the
  code and message the socket gives. NodeRefused.
- 500 without a code: CLNRest could not hear lightningd's answer (its RPC connection failed):
  the method may have run. NodeSilent. So is any other status, or an answer that is not JSON.

Deadlines are the socket's: `timeout` bounds each wait (connecting, the handshake, each read
of the answer). A failure before the request is sent (refused, no such host, TLS not
trusted) is NodeMissing; a timeout or a broken connection after it is NodeSilent, never a
failure. The rune is sent in a header and is never logged nor put into an error message.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from apps.wallet.backends.base import NodeMissing, NodeRefused, NodeSilent, RuneRefused

# The name every certificate Core Lightning makes for itself carries (see `_names_node`).
CLN_CERTIFICATE_NAME = "cln"
RUNE_PATTERN = re.compile(r"[A-Za-z0-9_=-]+")  # base64url, as createrune gives it
# A rune pasted from cln-application's `.commando-env` file: LIGHTNING_RUNE="..."
COMMANDO_ENV = re.compile(r'^\s*LIGHTNING_RUNE\s*=\s*"?([A-Za-z0-9_=-]+)"?\s*$', re.MULTILINE)
ERROR_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class RestNode:
    """Where CLNRest listens, the rune to show it, and the CA file ("" = the system's CAs)."""

    url: str
    rune: str
    ca_file: str = ""

    def __repr__(self) -> str:  # never the rune, whatever prints this
        return f"RestNode(url={self.url!r}, ca_file={self.ca_file!r})"


def configured_node() -> RestNode:
    """The node the settings name; the rune file is read each time, so a new rune takes."""
    return RestNode(
        settings.LIGHTNING_REST_URL,
        rune_read(settings.LIGHTNING_RUNE_FILE),
        settings.LIGHTNING_REST_CA,
    )


def rune_read(path: str) -> str:
    """The rune in `path`: the rune alone, or a `.commando-env` line; NodeMissing if none."""
    if not path:
        raise NodeMissing("CLNRest needs a rune: set SOVEREIGN_LIGHTNING_RUNE_FILE.")
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not text"
        raise NodeMissing(f"The rune file cannot be read ({Path(path).name}: {reason}).") from None
    pasted = COMMANDO_ENV.search(text)
    rune = pasted.group(1) if pasted else text
    if not RUNE_PATTERN.fullmatch(rune):
        raise NodeMissing(f"The rune file ({Path(path).name}) does not hold a rune.")
    return rune


def call(node: RestNode, method: str, timeout: float, params: dict[str, Any]) -> dict[str, Any]:
    """One call through CLNRest; raises NodeMissing (RuneRefused), NodeSilent or NodeRefused."""
    # As pyln-client and CLNRest both do: a parameter given as None is not sent.
    body = json.dumps({k: v for k, v in params.items() if v is not None}).encode()
    connection = _connected(node, timeout)
    try:
        connection.request("POST", f"/v1/{method}", body=body, headers=_headers(node))
        response = connection.getresponse()
        status, raw = response.status, response.read()
    except (OSError, http.client.HTTPException):  # timeouts, resets, TLS alerts, cut answers
        raise NodeSilent(
            f"The node did not answer {method} in time, or the connection broke."
        ) from None
    finally:
        connection.close()
    return _result(node, method, status, raw)


def _headers(node: RestNode) -> dict[str, str]:
    return {
        "Rune": node.rune,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Connection": "close",
    }


def _connected(node: RestNode, timeout: float) -> http.client.HTTPConnection:
    """A connection with TLS established and its certificate checked; nothing sent yet."""
    parts = urlsplit(node.url)
    host = parts.hostname or ""
    connection: http.client.HTTPConnection
    if parts.scheme == "http":
        connection = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    else:
        context = _tls_context(node.ca_file)
        connection = http.client.HTTPSConnection(
            host, parts.port or 443, timeout=timeout, context=context
        )
    try:
        connection.connect()
        if parts.scheme == "https" and node.ca_file:
            _check_names(connection, host)
    except NodeMissing:
        connection.close()
        raise
    except ssl.SSLCertVerificationError as error:
        connection.close()
        raise NodeMissing(
            f"CLNRest's certificate is not trusted ({error.verify_message}); nothing was sent. "
            "Check SOVEREIGN_LIGHTNING_REST_CA."
        ) from None
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise NodeMissing(f"CLNRest is not answering at {host} ({reason}).") from None
    return connection


def _tls_context(ca_file: str) -> ssl.SSLContext:
    if not ca_file:
        return ssl.create_default_context()
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError):
        raise NodeMissing(
            f"The CA file for CLNRest cannot be read ({Path(ca_file).name}); nothing was sent."
        ) from None
    # The node's own CA (made by cln-grpc or CLNRest) signs the certificate, but the name in it
    # is rarely the address we dial: cln-grpc (on Umbrel, started with CLNRest, it usually makes
    # the certificates first) names only "cln" and "localhost", and CLNRest adds the IP of
    # `clnrest-host` only when it makes them itself. So OpenSSL's hostname check is off, the
    # chain is verified against this CA alone, and `_check_names` then asks for our host or
    # "cln". The CA is the node's (its key never leaves the lightning-dir), and strict mode's
    # public-PKI profile checks do not apply to it.
    context.check_hostname = False
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


def _check_names(connection: http.client.HTTPConnection, host: str) -> None:
    sock = connection.sock
    certificate = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    names = certificate.get("subjectAltName", ()) if certificate else ()
    if not _names_node(names, host):
        raise NodeMissing(
            f"CLNRest's certificate names neither {host} nor {CLN_CERTIFICATE_NAME!r}; "
            "nothing was sent."
        )


def _names_node(names: Any, host: str) -> bool:
    dns = {str(value).lower() for kind, value in names if kind == "DNS"}
    if CLN_CERTIFICATE_NAME in dns or host.lower() in dns:
        return True
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        return False
    for kind, value in names:
        if kind == "IP Address":
            try:
                if ipaddress.ip_address(str(value).strip()) == wanted:
                    return True
            except ValueError:
                continue
    return False


def _result(node: RestNode, method: str, status: int, raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if status == 201 and isinstance(answer, dict):
        return answer
    error = answer if isinstance(answer, dict) else {}
    code, message = error.get("code"), _scrubbed(node, str(error.get("message", "")))
    if status in (401, 403):
        raise RuneRefused(
            f"The rune was refused for {method}: {message} ({code}). Nothing was done; "
            "make a new rune (manage.py wallet rune)."
        )
    if status in (404, 500) and isinstance(code, int):
        raise NodeRefused(code, message)
    raise NodeSilent(f"CLNRest gave no answer from the node for {method} (HTTP {status}).")


def _scrubbed(node: RestNode, message: str) -> str:
    """CLN quotes a malformed parameter in its error, the rune among them: never repeat it."""
    return message.replace(node.rune, "<rune>")[:ERROR_MESSAGE_CHARS]
