"""Fetching a model file over HTTP into a `.part` file that a later attempt resumes.

Resuming asks for `Range: bytes=N-` from where the part file ends. A server that answers
206 sends the rest; one that answers 200 sends the whole file again, and the part starts
over. The SHA-256 is computed while writing (over the part already there when resuming),
so the finished file is never read twice.

What will not fit is refused: the size the server announces before a byte is written, and
the free space again while the file streams in, always keeping FREE_SPACE_MARGIN free for
the rest of the box (a Bitcoin node's blocks, the database). Errors say what went wrong in
plain words, never the remote server's own status line or content type.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from apps.inference.gguf import MAGIC
from sovereign.pinned_http import PinnedHTTP, PinnedHTTPS

CHUNK_BYTES = 1 << 16
TIMEOUT_SECONDS = 60
REPORT_EVERY_SECONDS = 0.25
USER_AGENT = "Sovereign (model download)"
FREE_SPACE_MARGIN = 2 << 30  # bytes always left free on the disk of the models folder
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class DownloadError(Exception):
    """The download stopped; the message says why, whether the part is worth keeping, and
    whether trying again can help (not for a wrong file, one too big, or a 4xx)."""

    def __init__(self, message: str, *, resumable: bool, permanent: bool = False) -> None:
        super().__init__(message)
        self.resumable, self.permanent = resumable, permanent


def free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def check_room(directory: Path, still_to_come: int | None) -> None:
    """Refuse a file that would leave less than FREE_SPACE_MARGIN free (size unknown: refuse
    once the margin itself would be eaten into)."""
    room = free_bytes(directory) - FREE_SPACE_MARGIN
    if room < 0 or (still_to_come is not None and still_to_come > room):
        need = "" if still_to_come is None else f" needs {_size(still_to_come)} more and"
        raise DownloadError(
            f"The file does not fit: it{need} would leave less than {_size(FREE_SPACE_MARGIN)} "
            f"free on the disk ({_size(max(room, 0))} can be used).",
            resumable=False,
            permanent=True,
        )


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 10**8 else f"{count / 1e6:.1f} MB"


class DownloadStopped(Exception):
    """Whoever watches the progress asked to stop (the download was cancelled)."""


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    total_bytes: int | None
    bytes_per_second: float | None = None


# Called with the progress at most every REPORT_EVERY_SECONDS; answers whether to go on.
Reporter = Callable[[Progress], bool]


def check_target(url: str, own_ports: Collection[int]) -> None:
    """Refuse a URL that reaches one of the node's own ports on this machine (its web server,
    say): the download runs with the node's own standing, and must not be turned on it."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port not in own_ports or not parts.hostname:
        return
    try:
        addresses = _addresses(parts.hostname, port)
    except OSError:
        return  # not resolvable: the fetch itself says it cannot connect
    _refuse_own_port(port, addresses, own_ports)


def _addresses(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _refuse_own_port(port: int, addresses: list[str], own_ports: Collection[int]) -> None:
    if port in own_ports and any(_is_this_machine(address) for address in addresses):
        raise DownloadError(
            f"Port {port} on this machine is the node's own: it is not downloaded from.",
            resumable=False,
            permanent=True,
        )


def _is_this_machine(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))  # only an address of this machine can be bound
        except OSError:
            return False
    return True


def _checked_socket(
    host: str, port: int, timeout: float | None, *, own_ports: Collection[int]
) -> socket.socket:
    """Resolves the name once, checks what it got, and connects to those very addresses, so
    the name cannot point at the node's own port between the check and the connection."""
    addresses = _addresses(host, port)
    _refuse_own_port(port, addresses, own_ports)
    failure: OSError = OSError(f"{host} has no address")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as error:
            failure = error
    raise failure


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    """Every connection, the first and each redirect's, goes only where it was checked."""

    def __init__(self, own_ports: Collection[int]) -> None:
        super().__init__()
        self.own_ports = own_ports

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        dial = partial(_checked_socket, own_ports=self.own_ports)
        return self.do_open(partial(PinnedHTTP, dial=dial), req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, own_ports: Collection[int]) -> None:
        super().__init__()
        self.own_ports = own_ports

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        dial = partial(_checked_socket, own_ports=self.own_ports)
        connection = partial(PinnedHTTPS, dial=dial)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


def fetch(
    url: str,
    part: Path,
    report: Reporter,
    known_total: int | None = None,
    own_ports: Collection[int] = (),
) -> str:
    """Download url into part, resuming from where part ends; returns the file's SHA-256."""
    offset = part.stat().st_size if part.exists() else 0
    if offset and offset == known_total:
        return _sha256_of(part).hexdigest()  # whole already: stopped before it was registered
    # The URL's scheme was checked when the download was asked for: http or https only.
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        opener = urllib.request.build_opener(
            _CheckedHTTPHandler(own_ports), _CheckedHTTPSHandler(own_ports)
        )
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            offset, total = _resume_point(response, offset)
            check_room(part.parent, None if total is None else total - offset)
            digest = _sha256_of(part) if offset else hashlib.sha256()
            with part.open("ab" if offset else "wb") as file:
                _copy(response, file, digest, Progress(offset, total), report)
    except urllib.error.HTTPError as error:
        if 400 <= error.code < 500:
            raise DownloadError(
                "The server refused to send the file (a client error: check the URL).",
                resumable=False,
                permanent=True,
            ) from None
        raise DownloadError(
            "The server failed to send the file; retry later.", resumable=True
        ) from None
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(f"The download broke off ({_reason(error)}).", resumable=True) from None
    return digest.hexdigest()


def _resume_point(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """Where the body the server sends begins in the file, and the file's size if known."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match[1]) != offset:
            raise DownloadError(
                "The server sent a different part of the file than the one asked for.",
                resumable=False,
            )
        return offset, None if match[2] == "*" else int(match[2])
    length = response.headers.get("Content-Length", "")
    return 0, int(length) if length.isdigit() else None


def _copy(
    response: http.client.HTTPResponse,
    file: BinaryIO,
    digest: hashlib._Hash,
    progress: Progress,
    report: Reporter,
) -> None:
    started, started_at, reported_at = progress.bytes_done, time.monotonic(), 0.0
    done, total = progress.bytes_done, progress.total_bytes
    while chunk := response.read(CHUNK_BYTES):
        if done == 0:
            _refuse_unless_gguf(chunk)
        file.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        now = time.monotonic()
        # Every chunk: the disk is shared, and others may be filling it meanwhile.
        check_room(file_directory(file), None if total is None else total - done)
        if now - reported_at >= REPORT_EVERY_SECONDS:
            reported_at = now
            elapsed = now - started_at
            speed = (done - started) / elapsed if elapsed >= 1 else None  # steady after a second
            _report_or_stop(report, Progress(done, total, speed))
    # A connection that closes early ends the body without an error: only the size tells.
    if total is not None and done < total:
        raise DownloadError(f"The connection closed after {done} of {total} bytes.", resumable=True)
    _report_or_stop(report, Progress(done, done))


def _report_or_stop(report: Reporter, progress: Progress) -> None:
    if not report(progress):
        raise DownloadStopped


def file_directory(file: BinaryIO) -> Path:
    return Path(file.name).parent


def _refuse_unless_gguf(first_bytes: bytes) -> None:
    # Before gigabytes of an error page are fetched: a GGUF file starts with its magic.
    if not first_bytes.startswith(MAGIC):
        raise DownloadError(
            "This is not a GGUF file (it does not start with 'GGUF').",
            resumable=False,
            permanent=True,
        )


def _sha256_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest


def _reason(error: BaseException) -> str:
    """The socket's own words, without urllib's wrapping."""
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause) or type(cause).__name__
