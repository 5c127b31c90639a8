from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from apps.inference import services


@shared_task(name="inference.model_download", bind=True)
def model_download(self: Any, download_id: int) -> None:
    services.download_run(download_id, runner=self.request.hostname or "worker")


@worker_ready.connect
def downloads_resume(sender: Any, **kwargs: Any) -> None:
    # worker_ready comes before this worker takes its first task, so a download marked with
    # its name was left by its previous run (killed, or the node restarted): it goes on.
    services.downloads_resume(worker=sender.hostname)
