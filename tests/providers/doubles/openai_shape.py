"""An OpenAI-compatible chat server on loopback, the base every provider double builds on.

It answers `GET /v1/models` and `POST /v1/chat/completions` (whole, or streamed as server-sent
events), deterministically: the answer names the server and echoes the last question's words,
so a test can tell which provider answered. A subclass decides who may ask (`refusal`), and
may add routes (`extra_routes`) and headers on answers (`answer_headers`).

Switches every double has (`double.switches`, a plain dict, read on each request):
    "status_500": answer 500 instead of the answer
    "cut_stream": a streamed answer stops after two chunks, with no end
    "garbage": answer 200 with a body that is not JSON
    "html": answer 200 with an HTML page
    "huge": answer 200 with a body far larger than any answer (8 MiB)
    "silent": accept the request and never answer (until the double stops)
    "answer_text": answer this text (a str) instead of the echo
    "chunk_size": stream the answer in chunks of this many characters (an int) instead of
        word by word (the whole answer is the same text)
    "chunk_seconds": pause this long after each streamed chunk (a float; 0.001 otherwise)
    "together": a threading.Barrier: each streamed answer, its first chunk sent, waits there
        until as many answers as the barrier's parties are under way (a stream whose wait
        breaks stops with no end), so a test proves requests were answered at once
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Route = Callable[["Handler", dict[str, Any]], None]


@dataclass
class Refusal:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"  # MPP's 402 is application/problem+json (RFC 9457)


class OpenAIShapedDouble:
    """Serves on 127.0.0.1 from a thread; `start()`/`stop()` or `with`. `url` is the base URL."""

    name = "double"
    models: tuple[str, ...] = ("strong-1", "strong-2")

    def __init__(self) -> None:
        self.switches: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []  # every chat body received, in order
        self.answered = 0  # chat requests answered with a model's answer
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    # What subclasses change --------------------------------------------------------------
    def refusal(self, handler: Handler, body: dict[str, Any]) -> Refusal | None:
        """Why this chat request is not answered (a 402 with a challenge, a 401), or None."""
        return None

    def answer_headers(
        self, handler: Handler, body: dict[str, Any], usage: dict[str, int]
    ) -> list[tuple[str, str]]:
        return []

    def extra_routes(self) -> dict[tuple[str, str], Route]:
        """(method, path) -> handler, for a provider's own endpoints. A path segment written
        `{name}` matches any one segment; the handler finds it in `handler.path_params`."""
        return {}

    def model_entry(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": self.name}

    # Serving -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        double: OpenAIShapedDouble = self

        class BoundHandler(Handler):
            owner = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), BoundHandler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer_text(self, body: dict[str, Any]) -> str:
        question = str(body.get("messages", [{}])[-1].get("content", ""))
        return f"{self.name} answers: {question}"


def usage_of(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(text.split()),
        "total_tokens": prompt + len(text.split()),
    }


class Handler(BaseHTTPRequestHandler):
    owner: OpenAIShapedDouble
    protocol_version = "HTTP/1.0"  # bodies end when the connection closes: streams need no framing
    path_params: dict[str, str]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def send_json(
        self,
        status: int,
        payload: Any,
        headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
        content_type: str = "application/json",
    ) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        body = self.json_body() if method == "POST" else {}
        route = _route_for(self.owner.extra_routes(), method, path, self)
        if route is not None:
            route(self, body)
        elif (method, path) == ("GET", "/v1/models"):
            data = [self.owner.model_entry(m) for m in self.owner.models]
            self.send_json(200, {"object": "list", "data": data})
        elif (method, path) == ("POST", "/v1/chat/completions"):
            self._chat(body)
        else:
            self.send_json(404, {"error": {"message": f"no route {method} {path}"}})

    def _chat(self, body: dict[str, Any]) -> None:
        owner = self.owner
        refusal = owner.refusal(self, body)
        if refusal is not None:
            self.send_json(refusal.status, refusal.body, refusal.headers, refusal.content_type)
            return
        owner.requests.append(body)
        if self._broken():
            return
        text = owner.switches.get("answer_text") or owner.answer_text(body)
        usage = usage_of(body, text)
        owner.answered += 1
        headers = owner.answer_headers(self, body, usage)
        if body.get("stream"):
            self._stream(body, text, usage, headers)
        else:
            self.send_json(200, _completion(body, text, usage), headers)

    def _broken(self) -> bool:
        switches = self.owner.switches
        if switches.get("silent"):
            self.owner._stopping.wait(600)
            return True
        if switches.get("status_500"):
            self.send_json(500, {"error": {"message": "upstream failed"}})
            return True
        raw = None
        if switches.get("garbage"):
            raw, kind = b"\x00not json{{", "application/json"
        elif switches.get("html"):
            raw, kind = b"<html><body>Bad gateway</body></html>", "text/html"
        elif switches.get("huge"):
            raw, kind = b'{"x": "' + b"a" * (8 << 20) + b'"}', "application/json"
        if raw is None:
            return False
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(raw)
        return True

    def _stream(
        self, body: dict[str, Any], text: str, usage: dict[str, int], headers: list[tuple[str, str]]
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        for n, piece in enumerate(_pieces(text, self.owner.switches.get("chunk_size"))):
            if self.owner.switches.get("cut_stream") and n == 2:
                return  # the connection closes with no end
            self._event(_chunk(body, {"content": piece}, None))
            if n == 0 and not self._all_under_way():
                return  # the connection closes with no end
            time.sleep(self.owner.switches.get("chunk_seconds", 0.001))
        self._event(_chunk(body, {}, "stop"))
        self._event({**_chunk(body, {}, None), "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    def _all_under_way(self) -> bool:
        together = self.owner.switches.get("together")
        if together is None:
            return True
        try:
            together.wait(timeout=30)
        except threading.BrokenBarrierError:
            return False
        return True

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def _pieces(text: str, chunk_size: int | None) -> list[str]:
    """The answer as it streams: word by word (each after the first with its leading space),
    or in chunks of `chunk_size` characters."""
    if chunk_size:
        return [text[at : at + chunk_size] for at in range(0, len(text), chunk_size)]
    words = text.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


def _route_for(
    routes: dict[tuple[str, str], Route], method: str, path: str, handler: Handler
) -> Route | None:
    """The route for this request: an exact path, else a template whose `{name}` segments
    take the request's segments (kept in `handler.path_params`)."""
    handler.path_params = {}
    if (method, path) in routes:
        return routes[(method, path)]
    segments = path.split("/")
    for (route_method, template), route in routes.items():
        parts = template.split("/")
        if route_method != method or "{" not in template or len(parts) != len(segments):
            continue
        pairs = list(zip(parts, segments, strict=True))
        if all(part == segment for part, segment in pairs if not part.startswith("{")):
            handler.path_params = {p[1:-1]: s for p, s in pairs if p.startswith("{")}
            return route
    return None


def _completion(body: dict[str, Any], text: str, usage: dict[str, int]) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    }
    return {
        "id": "chatcmpl-double",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [choice],
        "usage": usage,
    }


def _chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "chatcmpl-double",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [choice],
    }
