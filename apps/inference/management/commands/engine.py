"""`manage.py engine`: the model engine process (`manage.py run` starts and watches it)."""

from __future__ import annotations

import logging
from typing import Any

import uvloop
from django.conf import settings
from django.core.management.base import BaseCommand

from apps.inference.backends.engine import socket_path
from apps.inference.batching import REPRODUCIBLE_PROMPT_CHUNK
from apps.inference.engine import Decoder, EngineServer, priority_lower
from apps.inference.self_check import check_llama
from apps.inference.services import bundled_model_file


class Command(BaseCommand):
    help = "Run the model engine: one copy of the weights, every request decoded in one batch."

    def handle(self, *args: Any, **options: Any) -> None:
        # Below the Bitcoin and Lightning nodes: they win the cores when they are busy.
        nice = priority_lower(settings.ENGINE_NICE)
        logging.basicConfig(level=settings.LOG_LEVEL, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("sovereign.engine").info("Engine running at niceness %d", nice)
        decoder = Decoder(
            slots=settings.ENGINE_SLOTS,
            context_per_slot=settings.ENGINE_CONTEXT_PER_SLOT,
            max_waiting=settings.ENGINE_QUEUE,
            idle_unload=settings.ENGINE_IDLE_SECONDS,
            threads=settings.ENGINE_THREADS or None,
            prompt_chunk=REPRODUCIBLE_PROMPT_CHUNK if settings.ENGINE_REPRODUCIBLE else None,
            self_check=lambda: check_llama(bundled_model_file(), settings.ENGINE_THREADS),
            stranger_slots=settings.SHARING_STRANGER_SLOTS,
        )
        server = EngineServer(socket_path(), decoder, request_bytes=settings.ENGINE_REQUEST_BYTES)
        # uvloop, as under the web server: each token's hand-off from the decoder thread and
        # write to the socket cost less CPU, and on a small machine that CPU is the decoding's.
        uvloop.run(server.serve())
