"""The strangers' lane of the engine: strangers' paid answers hold at most their slots and
their part of the queue, and the household always starts first. The real decoder on the
bundled SmolLM2 file."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

import pytest

from apps.inference.batching import SamplingParams
from apps.inference.engine import Decoder, Job
from apps.inference.engine_protocol import STRANGERS
from apps.inference.services import bundled_model_file
from tests.instances import Instance, wait_for

QUESTION = [{"role": "user", "content": "Count to five."}]
# With these seeds SmolLM2 tells a story of hundreds of tokens (tests/inference/test_api.py):
# the strangers are still answering when the member asks.
STORY = [{"role": "user", "content": "Write a very long story about a dragon, in ten chapters."}]


class StartsRecorded(Decoder):
    """The decoder, noting who starts, in order, and how many strangers ran as each started."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.starts: list[tuple[str, int]] = []

    def _start(self, job: Job) -> None:
        super()._start(job)
        strangers = sum(1 for running in self.running.values() if running.user == STRANGERS)
        self.starts.append((job.request_id, strangers))


def job(request_id: str, user: str, *, long: bool = False, seed: int = 1) -> Job:
    params = SamplingParams(
        max_tokens=400 if long else 6, temperature=1.0 if long else 0, seed=seed
    )
    messages = STORY if long else QUESTION
    return Job(request_id, str(bundled_model_file()), messages, params,
               asyncio.get_running_loop(), user=user)  # fmt: skip


async def first_event(asked: Job) -> dict[str, Any]:
    event = await asked.events.get()
    assert event is not None
    return event


async def ended(asked: Job) -> dict[str, Any]:
    while (event := await first_event(asked))["event"] not in ("done", "error"):
        pass
    return event


def running(decoder: Decoder) -> threading.Thread:
    thread = threading.Thread(target=decoder.run_forever, daemon=True)
    thread.start()
    return thread


def test_while_four_strangers_stream_a_members_request_takes_the_next_slot() -> None:
    decoder = StartsRecorded(
        slots=4, context_per_slot=512, max_waiting=8, idle_unload=60, stranger_slots=4
    )

    async def scenario() -> None:
        streaming = [job(f"s{n}", STRANGERS, long=True, seed=seed)
                     for n, seed in enumerate((1, 3, 4, 5), start=1)]  # fmt: skip
        waiting = job("s5", STRANGERS)
        for asked in [*streaming, waiting]:
            assert decoder.submit(asked)
        thread = running(decoder)
        try:
            firsts = await asyncio.gather(*(first_event(asked) for asked in streaming))
            assert all(event["event"] == "token" for event in firsts)
            assert decoder.status()["strangers"] == {"running": 4, "waiting": 1, "slots": 4}
            more = [job(f"s{n}", STRANGERS) for n in (6, 7, 8, 9)]
            # Strangers may wait only in their part of the queue (4 of 8): the ninth is refused,
            # and the member still finds a place.
            assert [decoder.submit(asked) for asked in more] == [True, True, True, False]
            member = job("member", "7")
            assert decoder.submit(member)
            assert (await ended(member))["event"] == "done"
        finally:
            for asked in [*streaming, waiting, *more]:
                decoder.inbox.put(asked.request_id)
            decoder.stop()
            await asyncio.to_thread(thread.join, 30)

    asyncio.run(scenario())

    started = [request_id for request_id, _ in decoder.starts]
    assert sorted(started[:4]) == ["s1", "s2", "s3", "s4"]
    # Within one slot's wait: the first slot that freed went to the member, not to s5 (which
    # had waited longer) nor to any stranger after it.
    assert started[4] == "member"


def test_strangers_hold_no_more_than_their_slots_and_the_household_starts_first() -> None:
    decoder = StartsRecorded(
        slots=2, context_per_slot=512, max_waiting=16, idle_unload=60, stranger_slots=1
    )

    async def scenario() -> None:
        asks = [job("s1", STRANGERS), job("s2", STRANGERS), job("s3", STRANGERS),
                job("m1", "7")]  # fmt: skip
        assert [decoder.submit(asked) for asked in asks] == [True, True, False, True]
        thread = running(decoder)
        try:
            assert [(await ended(asked))["event"] for asked in asks if asked.request_id != "s3"] \
                == ["done"] * 3  # fmt: skip
        finally:
            decoder.stop()
            await asyncio.to_thread(thread.join, 30)

    asyncio.run(scenario())

    # The member first though they asked last; never two strangers at once, though a slot
    # was free while s2 waited for s1.
    assert decoder.starts[0] == ("m1", 0)
    assert [request_id for request_id, _ in decoder.starts] == ["m1", "s1", "s2"]
    assert max(strangers for _, strangers in decoder.starts) == 1


@pytest.mark.processes
def test_the_engine_process_takes_the_strangers_slots_from_the_setting(make_instance: Any) -> None:
    node: Instance = make_instance(SOVEREIGN_ENGINE_SLOTS="3", SOVEREIGN_SHARING_STRANGER_SLOTS="2")
    node.run("engine")

    def status() -> dict[str, Any] | None:
        try:
            with socket.socket(socket.AF_UNIX) as connection:
                connection.settimeout(10)
                connection.connect(str(node.data_dir / "engine.sock"))
                connection.sendall(b'{"op": "status"}\n')
                answer: dict[str, Any] = json.loads(connection.makefile().readline())
                return answer
        except OSError:
            return None  # not listening yet

    shown = wait_for(status, 120, "the engine's status")
    assert shown["strangers"] == {"running": 0, "waiting": 0, "slots": 2}
