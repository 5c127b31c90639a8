"""Live events to browsers through the channel layer, sent once the transaction commits."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def publish_after_commit(group: str, message: dict[str, Any]) -> None:
    """Send message to group after commit; a failure is logged, never raised."""

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(group, message)
        except Exception:
            # Live updates are a convenience: pages also refresh on their own.
            logger.warning("Could not publish %s to %s", message.get("type"), group, exc_info=True)

    transaction.on_commit(send)
