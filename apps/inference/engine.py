"""The engine process: holds the local model and decodes every request in one batch.

It runs apart from the web server (`manage.py run` starts it as the `engine` program), so
a crash or out-of-memory in llama.cpp never takes the dashboard down; the supervisor
starts it again. Clients speak newline-delimited JSON over a unix socket in the data
directory: one request line, then event lines until `done` or `error`
(apps/inference/engine_protocol.py). A client that disconnects has its generation cancelled
at once.

On two cores every millisecond spent carrying tokens is taken from llama.cpp's decoding, so
events travel in batches: a decoding step's events reach the event loop in one hand-off, and
each client gets everything waiting for it in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.inference.batching import (
    BatchedGenerator,
    PromptTooLong,
    SamplingParams,
    SlotState,
    TokenEvent,
)
from apps.inference.context_fit import ContextExceeded, Overflow, answer_room, fit_context
from apps.inference.cpu_share import IdleCores
from apps.inference.engine_protocol import ENDS, STRANGERS, Event, lines_encoded, tokens_merged
from apps.inference.self_check import SelfCheck

logger = logging.getLogger("sovereign.engine")


@dataclass
class Job:
    request_id: str
    model_path: str
    messages: list[dict[str, str]]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    user: str = ""  # who asked: free slots go first to whoever has the fewest answers running
    cache_group: str = ""  # who may reuse whose cached prompt (BatchedGenerator.add)
    overflow: Overflow = Overflow.REFUSE  # what to do with a prompt longer than the context
    # The engine's events for the job, then None if the client goes away first.
    events: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    dropped_messages: int = 0  # of the oldest, left out to fit the context; told with `done`

    def emit(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


def _put_all(events: list[tuple[Job, Event]]) -> None:
    for job, event in events:
        job.events.put_nowait(event)


class Decoder:
    """The decoding thread: admits jobs, swaps models when idle, and steps the batch."""

    def __init__(
        self,
        *,
        slots: int,
        context_per_slot: int,
        max_waiting: int,
        idle_unload: float,
        threads: int | None = None,  # None: the cores other processes leave idle (cpu_share)
        prompt_chunk: int | None = None,  # see BatchedGenerator; REPRODUCIBLE_PROMPT_CHUNK
        self_check: Callable[[], SelfCheck] | None = None,  # run before the first request
        stranger_slots: int | None = None,  # None: strangers are held to no lane of their own
    ) -> None:
        self.slots, self.context_per_slot, self.threads = slots, context_per_slot, threads
        # Strangers' paid requests (one user, STRANGERS) hold at most this many slots, start
        # only when no household request waits, and may fill only part of the queue: the
        # household always finds a place, and a slot within one answer's wait.
        self.stranger_slots = slots if stranger_slots is None else min(stranger_slots, slots)
        self.stranger_waiting = min(self.stranger_slots, max_waiting // 2)
        self.strangers_in_inbox = 0  # submitted, not yet taken into waiting
        self.prompt_chunk = prompt_chunk
        self.idle_cores = IdleCores(enabled=threads is None)
        self.self_check = self_check
        self.checking = self_check is not None
        self.broken = ""  # why llama.cpp cannot run here, when its check said so
        self.max_waiting, self.idle_unload = max_waiting, idle_unload
        # A Job, a request id to cancel, or None to stop.
        self.inbox: queue.Queue[Job | str | None] = queue.Queue()
        self.waiting: deque[Job] = deque()
        self.running: dict[str, Job] = {}
        self.served: dict[str, int] = {}  # user -> when their last job started (a ticket)
        self.finished: Counter[str] = Counter()  # answers ended since start, by finish reason
        self.tickets = itertools.count()
        self.stopped = False
        self.generator: BatchedGenerator | None = None
        self.model_path = ""
        self.last_busy = time.monotonic()
        self.slot_states: list[SlotState] = []  # as of the last step: read without waiting
        self.lock = threading.Lock()  # guards the counts read by `status`
        self.outbox: list[tuple[Job, Event]] = []  # this step's events, handed over together

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "loaded": self.model_path or None,
                "running": len(self.running),
                "waiting": len(self.waiting),
                "pid": os.getpid(),
                "checking": self.checking,
                "broken": self.broken or None,
                "finished": dict(self.finished),
                "strangers": {
                    "running": self._strangers(self.running.values()),
                    "waiting": self._strangers(self.waiting),
                    "slots": self.stranger_slots,
                },
                "context_per_slot": self.context_per_slot,
                "slots": [
                    {"busy": slot.busy, "cached_tokens": slot.cached_tokens}
                    for slot in self.slot_states
                ],
            }

    def submit(self, job: Job) -> bool:
        """Queue a job, unless every slot is taken and max_waiting jobs already wait, or it is a
        stranger's and strangers already hold their slots and their part of the queue."""
        with self.lock:
            taken = len(self.running) + len(self.waiting) + self.inbox.qsize()
            if taken >= self.slots + self.max_waiting:
                return False
            if job.user == STRANGERS:
                held = self._strangers(self.running.values()) + self._strangers(self.waiting)
                if held + self.strangers_in_inbox >= self.stranger_slots + self.stranger_waiting:
                    return False
                self.strangers_in_inbox += 1
        self.inbox.put(job)
        return True

    @staticmethod
    def _strangers(jobs: Iterable[Job]) -> int:
        return sum(1 for job in jobs if job.user == STRANGERS)

    def stop(self) -> None:
        self.inbox.put(None)

    def run_forever(self) -> None:
        self._check_llama()
        while not self.stopped:
            self._take_inbox(block=not (self.running or self.waiting))
            self._admit()
            self.idle_cores.adjust(self.generator)
            if self.generator is not None and self.running:
                for event in self.generator.step():
                    self._deliver(event)
                self._hand_over()
                self.last_busy = time.monotonic()
                self._note_slots()
            elif (
                self.generator is not None and time.monotonic() - self.last_busy > self.idle_unload
            ):
                self._unload()
        self._unload()

    def _note_slots(self) -> None:
        states = self.generator.slot_states() if self.generator is not None else []
        with self.lock:
            self.slot_states = states

    def _take_inbox(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=1.0) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is None:
                self.stopped = True
            elif isinstance(item, str):
                self._cancel(item)
            else:
                with self.lock:
                    self.waiting.append(item)
                    self.strangers_in_inbox -= item.user == STRANGERS
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _check_llama(self) -> None:
        """Requests that arrive meanwhile wait in the queue; after a crash they are refused."""
        if self.self_check is None:
            return
        result = self.self_check()
        if result.outcome == "broken":
            logger.error("%s", result.message)
        elif result.outcome == "unknown":
            logger.warning("llama.cpp's check was inconclusive: %s", result.message)
        with self.lock:
            self.broken = result.message if result.outcome == "broken" else ""
            self.checking = False

    def _admit(self) -> None:
        if self.broken:
            self._refuse_waiting()
            return
        while self.waiting and len(self.running) < self.slots:
            job = self._next_waiting()
            if job is None:
                return  # only strangers wait, and they hold every slot they may
            if job.model_path != self.model_path and self.running:
                return  # another model is busy: swap once its requests are done
            with self.lock:
                self.waiting.remove(job)
            if job.model_path == self.model_path or self._load(job):
                self._start(job)

    def _refuse_waiting(self) -> None:
        with self.lock:
            refused, self.waiting = list(self.waiting), deque()
        for job in refused:
            job.emit({"event": "error", "code": "engine_broken", "message": self.broken})

    def _next_waiting(self) -> Job | None:
        """The household first, strangers only within their slots; fair between users: whoever
        has the fewest answers running, then whoever was served longest ago; first come among
        equals."""
        running = Counter(job.user for job in self.running.values())
        strangers_may = running[STRANGERS] < self.stranger_slots
        eligible = [job for job in self.waiting if strangers_may or job.user != STRANGERS]
        return min(
            eligible,
            key=lambda job: (
                job.user == STRANGERS,
                running[job.user],
                self.served.get(job.user, -1),
            ),
            default=None,
        )

    def _start(self, job: Job) -> None:
        generator = self.generator
        assert generator is not None
        try:
            if job.overflow == Overflow.DROP_OLDEST:
                fitted = fit_context(
                    job.messages,
                    generator.tokenize_chat,
                    lambda text: len(generator.tokenize(text, add_special=False)),
                    context=self.context_per_slot,
                    room=answer_room(job.params.max_tokens, self.context_per_slot),
                )
                tokens, job.dropped_messages = fitted.tokens, fitted.dropped
            else:
                tokens = generator.tokenize_chat(job.messages)
            generator.add(job.request_id, tokens, job.params, job.cache_group)
        except (PromptTooLong, ContextExceeded) as error:
            job.emit({"event": "error", "code": "context_length_exceeded", "message": str(error)})
            return
        except ValueError as error:  # a grammar llama.cpp cannot parse, say
            job.emit({"event": "error", "code": "bad_request", "message": str(error)})
            return
        with self.lock:
            self.running[job.request_id] = job
        self.served[job.user] = next(self.tickets)

    def _deliver(self, event: TokenEvent) -> None:
        job = self.running.get(event.request_id)
        if job is None:
            return
        if event.text:
            self.outbox.append((job, {"event": "token", "text": event.text}))
        if event.finished:
            with self.lock:
                del self.running[event.request_id]
                self.finished[event.finish_reason or "error"] += 1
            done = {
                "event": "done",
                "finish_reason": event.finish_reason,
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
                "cached_tokens": event.cached_tokens,
                "dropped_messages": job.dropped_messages,
            }
            self.outbox.append((job, done))

    def _hand_over(self) -> None:
        """A step's events reach each event loop in one call: the loop wakes once a step, not
        once a token, and the clients' writers find all of it there together."""
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[tuple[Job, Event]]] = defaultdict(list)
        for job, event in self.outbox:
            by_loop[job.loop].append((job, event))
        self.outbox = []
        for loop, events in by_loop.items():
            loop.call_soon_threadsafe(_put_all, events)

    def _cancel(self, request_id: str) -> None:
        with self.lock:
            self.waiting = deque(job for job in self.waiting if job.request_id != request_id)
            running = request_id in self.running
        if running and self.generator is not None:
            self.generator.cancel(request_id)

    def _load(self, job: Job) -> bool:
        self._unload()
        logger.info("Loading %s", Path(job.model_path).name)
        try:
            self.generator = BatchedGenerator(
                job.model_path,
                slots=self.slots,
                context_per_slot=self.context_per_slot,
                threads=self.threads,
                prompt_chunk=self.prompt_chunk,
            )
        except (OSError, ValueError, RuntimeError) as error:
            logger.warning("Could not load %s: %s", Path(job.model_path).name, error)
            message = f"The model file {Path(job.model_path).name} could not be loaded."
            job.emit({"event": "error", "code": "model_unavailable", "message": message})
            return False
        self.model_path = job.model_path
        return True

    def _unload(self) -> None:
        if self.generator is not None:
            logger.info("Unloading %s", Path(self.model_path).name)
            self.generator.close()
        self.generator, self.model_path = None, ""
        self._note_slots()


def priority_lower(nice: int) -> int:
    """Run this process at niceness `nice`, or at the lower priority it already has; returns
    the niceness it runs at. Linux keeps a niceness per thread (a new one takes its creator's),
    and libraries start threads when imported (OpenBLAS, under numpy): each is lowered."""
    threads = [int(task.name) for task in Path("/proc/self/task").glob("[0-9]*")] or [0]
    for thread in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            # Raising it again would need privileges the engine does not have.
            if os.getpriority(os.PRIO_PROCESS, thread) < nice:
                os.setpriority(os.PRIO_PROCESS, thread, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


class EngineServer:
    def __init__(self, socket_path: Path, decoder: Decoder, request_bytes: int = 1 << 20) -> None:
        self.socket_path, self.decoder = socket_path, decoder
        # A request line holds the messages, re-encoded, and a grammar that may outgrow the
        # schema it came from: room for four times the largest request the web server takes.
        self.line_limit = 4 * request_bytes

    async def serve(self) -> None:
        threading.Thread(target=self.decoder.run_forever, name="decoder", daemon=True).start()
        self.socket_path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(
            self._client, path=str(self.socket_path), limit=self.line_limit
        )
        os.chmod(self.socket_path, 0o600)  # only the node's own processes may ask
        logger.info("Engine listening on %s", self.socket_path.name)
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            if request.get("op") == "status":
                await self._send(writer, self.decoder.status())
            elif request.get("op") == "chat":
                await self._chat(request, reader, writer)
        except (ValueError, KeyError, TypeError):
            await self._send(
                writer, {"event": "error", "code": "bad_request", "message": "Malformed request."}
            )
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    async def _chat(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        job = Job(
            request_id=str(request["id"]),
            model_path=str(request["model_path"]),
            messages=list(request["messages"]),
            params=SamplingParams(
                **{**request["params"], "stop": tuple(request["params"]["stop"])}
            ),
            loop=asyncio.get_running_loop(),
            user=str(request.get("user", "")),
            cache_group=str(request.get("cache_group", "")),
            overflow=Overflow(request.get("overflow", Overflow.REFUSE)),
        )
        if not self.decoder.submit(job):
            await self._send(
                writer,
                {"event": "error", "code": "overloaded", "message": "The engine's queue is full."},
            )
            return
        # The client sends nothing more: its end of the stream means it went away. That
        # arrives as a None event, so each token costs one queue read, not a task and a wait.
        gone = asyncio.ensure_future(reader.read())
        gone.add_done_callback(lambda _: job.events.put_nowait(None))
        finished = False
        try:
            while not finished:
                events = await self._waiting(job)
                if events is None:
                    return
                finished = events[-1]["event"] in ENDS
                writer.write(lines_encoded(tokens_merged(events)))
                await writer.drain()
        finally:
            gone.cancel()
            if not finished:  # gone, or a write failed: stop decoding for nobody
                self.decoder.inbox.put(job.request_id)

    @staticmethod
    async def _waiting(job: Job) -> list[Event] | None:
        """The job's next event and every one already queued behind it (never waiting for
        more); None once the client has gone."""
        events: list[Event] = []
        event = await job.events.get()
        while event is not None:
            events.append(event)
            if job.events.empty():
                return events
            event = job.events.get_nowait()
        return None

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
