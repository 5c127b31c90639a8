"""The worker's heartbeat: a Celery consumer step that reports the worker alive.

It runs while the worker is connected to its broker, so "up" means the worker can take
tasks, and it reports a clean stop at once rather than waiting for the heartbeat to age.
"""

from __future__ import annotations

import os
from typing import Any

from celery import bootsteps


class WorkerHeartbeat(bootsteps.StartStopStep):
    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_entry: Any = None

    def start(self, consumer: Any) -> None:
        from django.conf import settings

        from apps.system import services

        services.worker_started(consumer.hostname, os.getpid())
        self.timer_entry = consumer.timer.call_repeatedly(
            settings.HEARTBEAT_SECONDS, services.worker_beat, (consumer.hostname,)
        )

    def stop(self, consumer: Any) -> None:
        from apps.system import services

        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
        services.worker_stopped(consumer.hostname)

    shutdown = stop
