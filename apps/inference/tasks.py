from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from apps.inference import conversations, services

logger = logging.getLogger(__name__)


@shared_task(name="inference.model_download", bind=True)
def model_download(self: Any, download_id: int) -> None:
    services.download_run(download_id, runner=self.request.hostname or "worker")


@worker_ready.connect
def downloads_resume(sender: Any, **kwargs: Any) -> None:
    # worker_ready comes before this worker takes its first task, so a download marked with
    # its name was left by its previous run (killed, or the node restarted): it goes on.
    services.downloads_resume(worker=sender.hostname)


@shared_task(name="inference.chat_retention_sweep")
def chat_retention_sweep() -> None:
    if deleted := conversations.retention_sweep():
        logger.info("Deleted %d conversations past their retention.", deleted)
