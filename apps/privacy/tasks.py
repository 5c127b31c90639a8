from __future__ import annotations

import logging

from celery import shared_task

from apps.privacy import policy

logger = logging.getLogger(__name__)


@shared_task(name="privacy.egress_retention_sweep")
def egress_retention_sweep() -> None:
    if deleted := policy.egress_sweep():
        logger.info("Deleted %d egress records past their retention.", deleted)
