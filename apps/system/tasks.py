from __future__ import annotations

from celery import shared_task

from apps.system import services


@shared_task(name="system.probe_answer", bind=True)
def probe_answer(self: object, probe_id: str) -> None:
    services.probe_answer(probe_id, worker=self.request.hostname or "")  # type: ignore[attr-defined]
