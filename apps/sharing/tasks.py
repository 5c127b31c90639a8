from __future__ import annotations

import logging

from celery import shared_task

from apps.sharing import announcing, pruning

log = logging.getLogger(__name__)


@shared_task(name="sharing.listing_refresh")
def listing_refresh() -> None:
    """Announce the offers again after they changed; relays are slow, a request must not wait."""
    try:
        announcing.listing_refresh()
    except announcing.ListingError as error:
        # Shown on the Sharing page as the last announcement's state; the owner retries there.
        log.warning("The Nostr listing was not refreshed: %s", error)


@shared_task(name="sharing.unpaid_balances_prune")
def unpaid_balances_prune() -> None:
    """Balances opened by 402s and key invoices never paid: gone once their invoice expired."""
    if pruned := pruning.unpaid_balances_pruned():
        log.info("Pruned %d balances whose only invoice expired unpaid.", pruned)
