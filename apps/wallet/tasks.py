from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from apps.wallet import services

logger = logging.getLogger(__name__)


@shared_task(name="wallet.reconcile")
def reconcile(occasion: str = "on schedule") -> None:
    counts = services.reconcile()
    if counts["complete"] or counts["failed"] or counts["pending"]:
        logger.info("Reconciled payments %s: %s", occasion, counts)


@shared_task(name="wallet.pay")
def pay(bolt11: str, purpose: str, caller: str, max_amount_msat: int,
        max_fee_msat: int | None = None) -> str:  # fmt: skip
    """Pay for a caller in the background (agents, providers); the journal keeps the outcome."""
    order = services.PayOrder(
        bolt11=bolt11,
        purpose=purpose,
        caller=caller,
        max_amount_msat=max_amount_msat,
        max_fee_msat=max_fee_msat,
    )
    try:
        return services.pay(order).state
    except services.PaymentRefused as refusal:
        logger.warning("Payment for %s refused: %s", purpose, refusal)
        return "refused"


@shared_task(name="wallet.invoices_sync")
def invoices_sync() -> None:
    services.invoices_sync()


@worker_ready.connect
def reconcile_at_start(**_: Any) -> None:
    """Payments left pending by a crash are settled as soon as a worker is back."""
    reconcile.delay("at the worker's start")
