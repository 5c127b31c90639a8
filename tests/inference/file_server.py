"""A local HTTP server for download tests: one file, Range requests, and faults on demand."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK_BYTES = 1 << 16


class FileServer:
    """Serves body at `url` as a static file server would, with switches for what goes wrong."""

    def __init__(self, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.body = body
        self.content_type = content_type
        self.ranges: list[str | None] = []  # the Range header of each request, in order
        self.bytes_sent = 0
        self.drop_after: int | None = None  # the next answer stops after this many bytes
        self.ignore_ranges = False  # answer 200 with the whole file, as some servers do
        self.bytes_per_second: float | None = None
        self.announced_length: int | None = None  # a Content-Length other than the body's
        self.without_length = False  # no Content-Length: the body ends when the line closes
        self.status: int | None = None  # answer every request with this error status
        self.redirect_to: str | None = None  # answer every request with a 302 to this URL
        self.pause_after: int | None = None  # send this many bytes, then wait for `resume`
        self.resume = threading.Event()
        handler = type("Handler", (_Handler,), {"files": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/model.gguf"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.resume.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    files: FileServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        files = self.files
        asked = self.headers.get("Range")
        files.ranges.append(asked)
        if files.status or files.redirect_to:
            self._refuse()
            return
        start = 0
        if asked is not None and not files.ignore_ranges:
            start = int(asked.removeprefix("bytes=").removesuffix("-"))
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", files.content_type)
        if files.without_length:
            self.close_connection = True
        else:
            length = files.announced_length or len(files.body) - start
            self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            last = len(files.body) - 1
            self.send_header("Content-Range", f"bytes {start}-{last}/{len(files.body)}")
        self.end_headers()
        self._send(files.body[start:])

    def _refuse(self) -> None:
        files = self.files
        page = b"<html><body>Secret internal page: 403 Forbidden by nginx</body></html>"
        self.send_response(files.status or 302)
        if files.redirect_to:
            self.send_header("Location", files.redirect_to)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def _send(self, body: bytes) -> None:
        files = self.files
        drop, files.drop_after = files.drop_after, None
        end = len(body) if drop is None else min(drop, len(body))
        for offset in range(0, end, CHUNK_BYTES):
            piece = body[offset : min(offset + CHUNK_BYTES, end)]
            try:
                self.wfile.write(piece)
            except OSError:  # the client hung up
                self.close_connection = True
                return
            files.bytes_sent += len(piece)
            if files.pause_after is not None and files.bytes_sent >= files.pause_after:
                files.pause_after = None
                files.resume.wait(timeout=120)
            if files.bytes_per_second:
                time.sleep(len(piece) / files.bytes_per_second)
        if drop is not None:
            self.close_connection = True  # before the promised Content-Length: a dropped line

    def log_message(self, format: str, *args: object) -> None:
        pass
