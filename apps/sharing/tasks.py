from __future__ import annotations

import logging

from celery import shared_task

from apps.sharing import announcing

log = logging.getLogger(__name__)


@shared_task(name="sharing.listing_refresh")
def listing_refresh() -> None:
    """Announce the offers again after they changed; relays are slow, a request must not wait."""
    try:
        announcing.listing_refresh()
    except announcing.ListingError as error:
        # Shown on the Sharing page as the last announcement's state; the owner retries there.
        log.warning("The Nostr listing was not refreshed: %s", error)
