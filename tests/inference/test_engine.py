"""The engine's decoder on the real model: who gets a free slot, and what a bad model file gives."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from apps.inference.backends.engine import chat_events, socket_path
from apps.inference.batching import SamplingParams
from apps.inference.context_fit import Overflow
from apps.inference.engine import Decoder, EngineServer, Job
from apps.inference.engine_protocol import Event
from apps.inference.services import bundled_model_file
from tests.instances import ROOT, Instance, children, command_line, wait_for

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


async def answer(decoder: Decoder, job: Job) -> tuple[str, dict[str, Any]]:
    """The text of one job's answer, and its last event."""
    assert decoder.submit(job)
    parts = []
    while (event := await job.events.get())["event"] == "token":  # type: ignore[index]
        parts.append(event["text"])  # type: ignore[index]
    assert event is not None
    return "".join(parts), event


def exchange(turn: int) -> list[dict[str, str]]:
    """A question and an answer of about 60 tokens together."""
    topic = ["rivers", "mountains", "forests", "deserts", "oceans", "islands"][turn % 6]
    return [
        {"role": "user", "content": f"Tell me some facts about {topic}, please, number {turn}."},
        {"role": "assistant", "content": f"Here are facts about {topic}. " * 6},
    ]


def test_a_conversation_three_times_the_context_keeps_answering_with_the_oldest_turns_dropped() -> (
    None
):
    context, max_tokens = 256, 12
    decoder = Decoder(slots=1, context_per_slot=context, max_waiting=4, idle_unload=60, threads=2)
    thread = threading.Thread(target=decoder.run_forever, daemon=True)
    thread.start()
    model = str(bundled_model_file())
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    history = [message for turn in range(14) for message in exchange(turn)]

    async def scenario() -> list[tuple[int, int, str]]:
        loop = asyncio.get_running_loop()
        whole = Job("whole", model, [*history, QUESTION[0]], params, loop)
        _, refused = await answer(decoder, whole)
        assert refused["code"] == "context_length_exceeded"  # refusing is still the default
        assert decoder.generator is not None
        assert len(decoder.generator.tokenize_chat(history)) > 3 * context
        turns = []
        for turn in range(6):
            question = {"role": "user", "content": f"And what is {turn} plus {turn}?"}
            job = Job(f"turn-{turn}", model, [*history, question], params, loop,
                      overflow=Overflow.DROP_OLDEST)  # fmt: skip
            text, done = await answer(decoder, job)
            assert done["event"] == "done", done
            turns.append((done["dropped_messages"], done["prompt_tokens"], text))
            history.extend([question, {"role": "assistant", "content": text}])
        return turns

    try:
        turns = asyncio.run(scenario())
    finally:
        decoder.stop()
        thread.join(timeout=30)
    dropped = [turn[0] for turn in turns]
    assert all(text.strip() for _, _, text in turns)  # every turn answered
    assert all(n > 0 and n % 2 == 0 for n in dropped)  # the oldest, in whole exchanges
    assert all(prompt + max_tokens <= context for _, prompt, _ in turns)
    assert dropped == sorted(dropped)
    assert len(set(dropped)) < len(dropped)  # the cut held still between some turns


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


def engine_pid(supervisor: int) -> int | None:
    return next((p for p in children(supervisor) if command_line(p).endswith(b"engine\x00")), None)


def thread_niceness(pid: int) -> dict[str, int]:
    """Each thread of the process by name, and the niceness it runs at (stat's 19th field)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        found[f"{name} {task.name}"] = int(stat.rsplit(")", 1)[1].split()[16])
    return found


@pytest.mark.processes
def test_the_engine_and_every_thread_it_starts_run_at_the_configured_niceness(
    tmp_path: Path,
) -> None:
    node = Instance(tmp_path / "node", SOVEREIGN_ENGINE_NICE="7")
    node.data_dir.mkdir()
    supervisor = node.run("engine")
    try:
        engine = wait_for(lambda: engine_pid(supervisor.pid), 30, "the engine process")
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(120)
            wait_for(lambda: (node.data_dir / "engine.sock").exists(), 60, "the engine's socket")
            connection.connect(str(node.data_dir / "engine.sock"))
            params = {"max_tokens": 2000, "temperature": 1.0, "top_p": 0.95, "seed": 1}
            request = {
                "op": "chat",
                "id": "nice",
                "model_path": str(bundled_model_file()),
                "messages": QUESTION,
                "params": {**params, "stop": [], "grammar": None},
            }
            connection.sendall(json.dumps(request).encode() + b"\n")
            first = json.loads(connection.makefile().readline())
            decoding = thread_niceness(engine)  # llama.cpp's own threads are running now
    finally:
        node.stop()

    assert first["event"] == "token"
    assert len(decoding) > 2  # the main thread, the decoder, llama.cpp's workers...
    expected = max(7, os.getpriority(os.PRIO_PROCESS, 0))
    assert decoding == dict.fromkeys(decoding, expected)


def test_the_engine_never_raises_a_priority_it_was_started_below() -> None:
    lower = "from apps.inference.engine import priority_lower; print(priority_lower(10))"
    argv = ["nice", "-n", "15", sys.executable, "-c", lower]
    child = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
    assert int(child.stdout) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 15)
