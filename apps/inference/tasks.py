from __future__ import annotations

import logging

from celery import shared_task

from apps.inference import conversations

logger = logging.getLogger(__name__)


@shared_task(name="inference.chat_retention_sweep")
def chat_retention_sweep() -> None:
    if deleted := conversations.retention_sweep():
        logger.info("Deleted %d conversations past their retention.", deleted)
