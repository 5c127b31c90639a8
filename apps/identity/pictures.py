"""Members' profile pictures, fetched once by the node and served from it.

A browser showing the People page then asks no other host for anything: a picture URL in a
profile is anyone's choice, and loading it from there would tell that host who looks, when.
"""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from apps.identity.addresses import Address, NotPublic, public_addresses
from sovereign.pinned_http import PinnedHTTP, PinnedHTTPS

MAX_PICTURE_BYTES = 512 * 1024
FETCH_SECONDS = 10
# The image types browsers show that cannot carry a script (so no SVG), by their first bytes.
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


class PictureRefused(Exception):
    """The picture could not be fetched, or is not an image within the limits."""


def picture_path(pubkey: str) -> Path:
    return settings.DATA_DIR / "pictures" / pubkey


def picture_type(content: bytes) -> str | None:
    """The image type of these bytes, or None if they are not a picture the node keeps."""
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in SIGNATURES.items() if content.startswith(magic)), None)


def picture_store(pubkey: str, url: str) -> None:
    """Fetch the picture at url and keep it for pubkey; a refused one removes the old."""
    path = picture_path(pubkey)
    try:
        content = picture_fetch(url)
    except PictureRefused:
        path.unlink(missing_ok=True)
        raise
    path.parent.mkdir(mode=0o700, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_bytes(content)
    partial.replace(path)


def picture_forget(pubkey: str) -> None:
    picture_path(pubkey).unlink(missing_ok=True)


def picture_fetch(url: str) -> bytes:
    """The image at url: http(s) on a public address, at most MAX_PICTURE_BYTES, no redirect."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PictureRefused("Only http and https pictures are fetched.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = public_addresses(parts.hostname, port)[0]
    except ValueError:  # a port out of range
        raise PictureRefused("The picture's address has no valid port.") from None
    except NotPublic as error:
        raise PictureRefused(str(error)) from None
    connection = _connection(parts.scheme, parts.hostname, address, port)
    try:
        return _read_image(connection, parts.path or "/", parts.query)
    except (OSError, http.client.HTTPException) as error:
        raise PictureRefused(f"The picture could not be fetched: {error}") from None
    finally:
        connection.close()


def _read_image(connection: http.client.HTTPConnection, path: str, query: str) -> bytes:
    connection.request("GET", f"{path}?{query}" if query else path, headers=_HEADERS)
    response = connection.getresponse()
    if response.status != 200:
        raise PictureRefused(f"The picture's host answered {response.status}.")
    content = _read_within(response, time.monotonic() + FETCH_SECONDS)
    if len(content) > MAX_PICTURE_BYTES:
        raise PictureRefused(f"The picture is larger than {MAX_PICTURE_BYTES // 1024} KiB.")
    if picture_type(content) is None:
        raise PictureRefused("That is not a PNG, JPEG, GIF or WebP picture.")
    return content


def _read_within(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """At most MAX_PICTURE_BYTES + 1 bytes, by the deadline: a host that drips bytes is cut."""
    content = b""
    while len(content) <= MAX_PICTURE_BYTES:
        if time.monotonic() > deadline:
            raise PictureRefused(f"The picture took longer than {FETCH_SECONDS} s to arrive.")
        chunk = response.read1(MAX_PICTURE_BYTES + 1 - len(content))
        if not chunk:
            break
        content += chunk
    return content


_HEADERS = {"User-Agent": "Sovereign", "Accept": "image/png,image/jpeg,image/gif,image/webp"}


def _connection(scheme: str, host: str, address: Address, port: int) -> http.client.HTTPConnection:
    def dial(host: str, port: int, timeout: float | None) -> socket.socket:
        return socket.create_connection((str(address), port), timeout)  # the checked address

    connection = PinnedHTTPS if scheme == "https" else PinnedHTTP
    return connection(host, port=port, timeout=FETCH_SECONDS, dial=dial)
