"""The engine's decoder on the real model: who gets a free slot, and what a bad model file gives."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from apps.inference.batching import SamplingParams
from apps.inference.engine import Decoder, Job
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
