"""What the inference tests share: the catalog's row for the bundled model (no engine), and
a claimed node running the web server and the engine (for the browser tests)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from nostr_sdk import Keys

from apps.inference.backends.engine import socket_path
from apps.inference.engine import Decoder, EngineServer, Job
from apps.inference.models import LocalModel
from apps.inference.services import bundled_model_file
from tests.instances import Instance

MODEL = "smollm2-135m-instruct"
CONTEXT = 256


@pytest.fixture
def model(db: None) -> LocalModel:
    return LocalModel.objects.create(
        name=MODEL, file_name="smollm2.gguf", size=1, sha256="a" * 64, architecture="llama",
        parameters=135_000_000, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip


def bundled_local_model() -> LocalModel:
    """The bundled model's file linked into the data directory and in the catalog, for the
    tests that run the real engine on it."""
    bundled = bundled_model_file()
    assert bundled is not None
    models = settings.DATA_DIR / "models"
    models.mkdir(exist_ok=True)
    link = models / "smollm2.gguf"
    if not link.exists():
        link.symlink_to(bundled)
    return LocalModel.objects.create(
        name=MODEL, file_name=link.name, size=1, sha256="a" * 64, architecture="llama",
        parameters=135_000_000, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.run("web", "engine")
    instance.wait_until("engine", "up", timeout=120)
    instance.claim(Keys.generate())
    yield instance
    instance.stop()


class RecordingDecoder(Decoder):
    """The engine's decoder, noting the messages of every request it is given."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.received: list[list[dict[str, str]]] = []
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> bool:
        self.received.append(job.messages)
        self.jobs.append(job)
        return super().submit(job)


@contextlib.contextmanager
def serving_engine(context: int = CONTEXT, slots: int = 2) -> Iterator[RecordingDecoder]:
    """A real engine in this process, serving on the node's socket, with `slots` requests of
    `context` tokens each."""
    decoder = RecordingDecoder(
        slots=slots, context_per_slot=context, max_waiting=4, idle_unload=600, threads=2
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    serving = asyncio.run_coroutine_threadsafe(EngineServer(socket_path(), decoder).serve(), loop)
    deadline = time.monotonic() + 30
    while not socket_path().exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield decoder
    finally:
        serving.cancel()
        concurrent.futures.wait([serving], timeout=10)
        decoder.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        socket_path().unlink(missing_ok=True)  # as a stopped engine leaves none to answer


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingDecoder]:
    with serving_engine() as decoder:
        yield decoder
