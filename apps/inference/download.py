"""Fetching a model file over HTTP into a `.part` file that a later attempt resumes.

Resuming asks for `Range: bytes=N-` from where the part file ends. A server that answers
206 sends the rest; one that answers 200 sends the whole file again, and the part starts
over. The SHA-256 is computed while writing (over the part already there when resuming),
so the finished file is never read twice.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from apps.inference.gguf import MAGIC

CHUNK_BYTES = 1 << 16
TIMEOUT_SECONDS = 60
REPORT_EVERY_SECONDS = 0.25
USER_AGENT = "Sovereign (model download)"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class DownloadError(Exception):
    """The download stopped; the message says why, and whether the part is worth keeping."""

    def __init__(self, message: str, *, resumable: bool) -> None:
        super().__init__(message)
        self.resumable = resumable


class DownloadStopped(Exception):
    """Whoever watches the progress asked to stop (the download was cancelled)."""


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    total_bytes: int | None
    bytes_per_second: float | None = None


# Called with the progress at most every REPORT_EVERY_SECONDS; answers whether to go on.
Reporter = Callable[[Progress], bool]


def fetch(url: str, part: Path, report: Reporter, known_total: int | None = None) -> str:
    """Download url into part, resuming from where part ends; returns the file's SHA-256."""
    offset = part.stat().st_size if part.exists() else 0
    if offset and offset == known_total:
        return _sha256_of(part).hexdigest()  # whole already: stopped before it was registered
    # The URL's scheme was checked when the download was asked for: http or https only.
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            offset, total = _resume_point(response, offset)
            digest = _sha256_of(part) if offset else hashlib.sha256()
            with part.open("ab" if offset else "wb") as file:
                _copy(response, file, digest, Progress(offset, total), report)
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"The server answered HTTP {error.code} ({error.reason}).", resumable=True
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
            _refuse_unless_gguf(chunk, response.headers.get("Content-Type", "unknown"))
        file.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        now = time.monotonic()
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


def _refuse_unless_gguf(first_bytes: bytes, content_type: str) -> None:
    # Before gigabytes of an error page are fetched: a GGUF file starts with its magic.
    if not first_bytes.startswith(MAGIC):
        raise DownloadError(
            f"This is not a GGUF file (it does not start with 'GGUF'; the server sent "
            f"{content_type.split(';')[0][:100]}).",
            resumable=False,
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
