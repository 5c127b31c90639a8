"""A real Celery worker that SIGKILLs itself right after a payment's pending row is written,
before the node is asked: `python -m tests.wallet.crashing_worker`."""

from __future__ import annotations

import os
import signal
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sovereign.settings")
django.setup()

from apps.wallet import services  # noqa: E402
from sovereign.celery import app  # noqa: E402


def crash_before_asking(payment: object) -> object:
    os.kill(os.getpid(), signal.SIGKILL)
    return payment


services.send = crash_before_asking  # type: ignore[assignment]
app.worker_main(["worker", "--pool", "solo", "--without-mingle", "--without-gossip",
                 "--hostname", "crashing@%h", *sys.argv[1:]])  # fmt: skip
