"""The engine's decoder on the real model: who gets a free slot, and what a bad model file gives."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path

from apps.inference.backends.engine import chat_events, socket_path
from apps.inference.batching import SamplingParams
from apps.inference.engine import Decoder, EngineServer, Job
from apps.inference.engine_protocol import Event
from apps.inference.services import bundled_model_file

QUESTION = [{"role": "user", "content": "Count to five."}]


async def answer_order(decoder: Decoder, requests: list[tuple[str, str, str]]) -> list[str]:
    """Submit (request id, user, model path) jobs together; the ids in the order they end."""
    loop = asyncio.get_running_loop()
    params = SamplingParams(max_tokens=6, temperature=0)
    jobs = [Job(rid, path, QUESTION, params, loop, user=user) for rid, user, path in requests]
    for job in jobs:
        assert decoder.submit(job)
    ended: list[str] = []

    async def wait(job: Job) -> None:
        while (event := await job.events.get())["event"] not in ("done", "error"):
            pass
        ended.append(job.request_id if event["event"] == "done" else f"{job.request_id}!")

    await asyncio.gather(*(wait(job) for job in jobs))
    return ended


def run_decoder(slots: int) -> tuple[Decoder, threading.Thread]:
    decoder = Decoder(slots=slots, context_per_slot=512, max_waiting=16, idle_unload=60)
    return decoder, threading.Thread(target=decoder.run_forever, daemon=True)


def test_a_free_slot_goes_to_the_user_who_has_waited_unserved() -> None:
    model = str(bundled_model_file())
    decoder, thread = run_decoder(slots=1)
    asks = [("alice-1", "alice", model), ("alice-2", "alice", model),
            ("alice-3", "alice", model), ("bob-1", "bob", model)]  # fmt: skip

    async def scenario() -> list[str]:
        ordered = asyncio.ensure_future(answer_order(decoder, asks))
        await asyncio.sleep(0)  # every job is queued before the decoder looks
        thread.start()
        return await ordered

    try:
        assert asyncio.run(scenario()) == ["alice-1", "bob-1", "alice-2", "alice-3"]
    finally:
        decoder.stop()
        thread.join(timeout=30)


def test_a_model_file_that_will_not_load_fails_its_request_and_not_the_engine(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    model = str(bundled_model_file())
    decoder, thread = run_decoder(slots=2)
    thread.start()
    try:
        ended = asyncio.run(answer_order(decoder, [("bad", "alice", str(broken))]))
        assert ended == ["bad!"]
        assert asyncio.run(answer_order(decoder, [("good", "alice", model)])) == ["good"]
    finally:
        decoder.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_the_model_is_loaded_with_the_threads_the_engine_is_given() -> None:
    decoder = Decoder(slots=1, context_per_slot=512, max_waiting=16, idle_unload=60, threads=3)
    thread = threading.Thread(target=decoder.run_forever, daemon=True)
    thread.start()
    try:
        asked = [("one", "alice", str(bundled_model_file()))]
        assert asyncio.run(answer_order(decoder, asked)) == ["one"]
        assert decoder.generator is not None
        assert decoder.generator.thread_counts == (3, 3)  # never what the cores alone give
    finally:
        decoder.stop()
        thread.join(timeout=30)


GREEDY = {"max_tokens": 24, "temperature": 0, "top_p": 1.0, "seed": 1, "stop": [], "grammar": None}


def over_the_socket(scenario: Callable[[Decoder], Awaitable[list[Event]]]) -> list[Event]:
    """scenario(decoder) with a real engine server in this event loop."""

    async def served() -> list[Event]:
        decoder = Decoder(slots=2, context_per_slot=512, max_waiting=4, idle_unload=60)
        serving = asyncio.ensure_future(EngineServer(socket_path(), decoder).serve())
        while not socket_path().exists():
            await asyncio.sleep(0.01)
        try:
            return await scenario(decoder)
        finally:
            decoder.stop()
            serving.cancel()

    try:
        return asyncio.run(served())
    finally:
        socket_path().unlink(missing_ok=True)


def asked(max_tokens: int = 24) -> AsyncGenerator[Event, None]:
    params = {**GREEDY, "max_tokens": max_tokens}
    return chat_events(str(bundled_model_file()), QUESTION, params, user="1")


async def read_all(decoder: Decoder) -> list[Event]:
    return [event async for event in asked()]


async def lines_after_the_end(decoder: Decoder) -> list[Event]:
    """The engine's own lines, read with the event loop held (the engine's and this reader's)
    while the decoder finishes the answer: every later event waits for the writer at once."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path()))
    request = {"op": "chat", "id": "held", "model_path": str(bundled_model_file()),
               "messages": QUESTION, "params": GREEDY}  # fmt: skip
    writer.write(json.dumps(request).encode() + b"\n")
    lines = [json.loads(await reader.readline())]
    while decoder.status()["running"]:
        time.sleep(0.01)
    while line := await reader.readline():
        lines.append(json.loads(line))
    writer.close()
    return lines


async def left_early(decoder: Decoder) -> list[Event]:
    events = asked(max_tokens=2000)
    first = await anext(events)
    await events.aclose()
    while not decoder.status()["finished"]:
        await asyncio.sleep(0.01)
    return [first, {"event": "finished", **decoder.status()["finished"]}]


def test_tokens_already_waiting_are_written_as_one_line_with_the_same_text() -> None:
    each = over_the_socket(read_all)
    together = over_the_socket(lines_after_the_end)

    assert [event["event"] for event in together] == ["token", "token", "done"]
    assert "".join(e["text"] for e in together[:-1]) == "".join(e["text"] for e in each[:-1])
    assert together[-1] == each[-1]
    assert together[-1]["completion_tokens"] > 2  # so the second token line holds several


def test_a_client_that_leaves_mid_answer_has_its_generation_cancelled() -> None:
    first, finished = over_the_socket(left_early)

    assert first["event"] == "token"
    assert finished == {"event": "finished", "cancelled": 1}
