"""bench/inference.py's contenders and what they all share: the prompt, the context, the
threads; how each is started, and asked for one streamed answer timed by the client."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from tests.instances import Instance, free_port, wait_for

MAX_TOKENS = 128
STREAMS = 4
CONTEXT = 2048  # tokens per sequence, for every contender
THREADS = os.cpu_count() or 1
PROMPT = [
    {
        "role": "user",
        "content": "Write a long, detailed story about a lighthouse keeper who finds a "
        "message in a bottle. Describe the sea, the weather and every day of the week.",
    }
]
MODEL_NAME = "smollm2-135m-instruct"


@dataclass
class Stream:
    """One streamed answer, timed by the client (time.perf_counter, seconds)."""

    sent: float
    first: float | None = None  # first non-empty content
    last: float | None = None  # last non-empty content
    text: str = ""
    error: str = ""
    tokens: int = 0  # the text's length in the model's own tokens (counted afterwards)
    serving_cpu: float = 0  # CPU seconds of the contender's serving threads meanwhile

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent

    @property
    def tokens_per_second(self) -> float:
        if self.last is None or not self.tokens:
            return 0.0
        return self.tokens / (self.last - self.sent)

    def receive(self, content: str) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last, self.text = now, self.text + content


Messages = list[dict[str, str]]
# A contender's one way in: these messages, at most this many tokens, started at the barrier
# (None: at once).
Send = Callable[[Messages, int, threading.Barrier | None], Stream]


@dataclass
class Contender:
    name: str
    pid: int  # the process that holds the model
    send: Send
    concurrent: bool = True
    converses: bool = True  # takes part in the scripted conversation
    # (pid, thread id or None for all its threads) that carry its answers to the client,
    # apart from the decoding: on these cores, their CPU is taken from the decoding.
    serving: list[tuple[int, int | None]] = field(default_factory=list)

    def ask(self, start: threading.Barrier | None) -> Stream:
        """The bench's own prompt, at most MAX_TOKENS."""
        return self.send(PROMPT, MAX_TOKENS, start)


def raw_worker(connection: Connection, model_path: str) -> None:
    """The raw contender's own process: answers each (messages, max_tokens) it is sent, one
    at a time, until None."""
    from llama_cpp import Llama

    from sovereign import llama_cpu

    llama_cpu.load()  # a portable build's CPU library, as the engine loads it
    # Flash attention as the engine has it (llama.cpp's default; llama-cpp-python's is off):
    # the same arithmetic, so the same text.
    llm = Llama(
        model_path,
        n_ctx=CONTEXT,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        flash_attn=True,
        verbose=False,
    )
    # No llm.reset(): the Llama object keeps its last sequence's KV cache, as its users have it.
    while (request := connection.recv()) is not None:
        sent, max_tokens = request
        stream = Stream(sent=time.perf_counter())
        chunks = llm.create_chat_completion(
            cast(Any, sent),
            max_tokens=max_tokens,
            temperature=0,
            repeat_penalty=1.0,
            stream=True,
        )
        for chunk in chunks:
            content = cast(Any, chunk)["choices"][0]["delta"].get("content")
            if content:
                stream.receive(content)
        connection.send(stream)


def in_child(target: Callable[..., None], model_path: str) -> tuple[Any, Connection]:
    """A fresh interpreter running target(connection, model_path)."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=target, args=(theirs, model_path), daemon=True
    )
    process.start()
    return process, ours


def http_ask(url: str, body: bytes, key: str, start: threading.Barrier | None) -> Stream:
    """One streamed chat completion, read as server-sent events with the standard library.

    A household's clients run on its phones and laptops; here the client shares the cores
    with the server it measures, so it does as little as it can: the OpenAI client's
    per-chunk parsing costs about half a millisecond of CPU a token, which every HTTP
    contender would pay out of its decoding."""
    if start is not None:
        start.wait()
    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(address.netloc, timeout=300)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    stream = Stream(sent=time.perf_counter())
    try:
        connection.request("POST", address.path, body=body, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            stream.error = f"HTTP {response.status}: {response.read()[:200]!r}"
            return stream
        while line := response.readline():
            if not line.startswith(b"data: ") or line.rstrip() == b"data: [DONE]":
                continue
            data = json.loads(line[len(b"data: ") :])
            if "error" in data:
                stream.error = str(data["error"])[:200]
            for choice in data.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    stream.receive(content)
    except (OSError, http.client.HTTPException, ValueError) as error:
        stream.error = f"{type(error).__name__}: {error}"[:200]
    finally:
        connection.close()
    return stream


def http_contender(
    name: str, pid: int, base_url: str, key: str, *, converses: bool = True, **extra: Any
) -> Contender:
    url = f"{base_url}/v1/chat/completions"

    def send(sent: Messages, max_tokens: int, start: threading.Barrier | None) -> Stream:
        body = {"model": MODEL_NAME, "messages": sent, "max_tokens": max_tokens,
                "temperature": 0, "stream": True, **extra}  # fmt: skip
        return http_ask(url, json.dumps(body).encode(), key, start)

    return Contender(name, pid, send, converses=converses)


def sovereign_node(root: Path) -> tuple[Instance, str]:
    from nostr_sdk import Keys

    (root / "node").mkdir()
    node = Instance(
        root / "node",
        SOVEREIGN_ENGINE_THREADS=str(THREADS),
        SOVEREIGN_ENGINE_SLOTS=str(STREAMS),
        SOVEREIGN_ENGINE_CONTEXT=str(CONTEXT),
        SOVEREIGN_LOG_LEVEL="WARNING",
    )
    node.run("web", "engine")
    node.wait_until("engine", "up", timeout=120)
    owner = Keys.generate()
    node.claim(owner)
    created = node.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "bench")
    if created.returncode != 0:
        raise SystemExit(created.stderr)
    return node, created.stdout.strip().splitlines()[-1]


def engine_pid(node: Instance) -> int:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(5)
        connection.connect(str(node.data_dir / "engine.sock"))
        connection.sendall(b'{"op": "status"}\n')
        return int(json.loads(connection.makefile().readline())["pid"])


class LlamaServer:
    """`python -m llama_cpp.server` on a free port, with the bench's threads and context."""

    def __init__(self, root: Path, model_path: str, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(root / f"llama-server-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sovereign.llama_cpu", "llama_cpp.server", "--model", model_path,
             "--n_ctx", str(CONTEXT), "--n_threads", str(THREADS),
             "--n_threads_batch", str(THREADS), "--host", "127.0.0.1",
             "--port", str(self.port), *options],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self._answers, 120, "llama_cpp.server to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited with {self.process.returncode}")
        try:
            models = f"{self.url}/v1/models"  # http on the loopback, built here
            with urllib.request.urlopen(models, timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
