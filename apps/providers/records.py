"""What each outside request leaves behind: its egress record, and the provider's record
(outcome, latency, tokens, cost), from which the Providers page and routing read reputation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from apps.audit.services import audit_record
from apps.inference.backends.base import Usage
from apps.privacy import services as privacy
from apps.providers.backends.base import Call, Outcome
from apps.providers.models import OutsideRequest
from apps.wallet import services as wallet


@dataclass(frozen=True)
class Ended:
    call: Call
    outcome: Outcome
    error: str
    egress_id: int | None
    payment_purposes: tuple[str, ...]
    sent: bool  # the question left the node
    first_token_ms: int | None
    total_ms: int
    usage: Usage | None


def egress_begin(call: Call) -> int:
    """Written before the first byte leaves: a crash mid-request still leaves its record."""
    return privacy.egress_begin(
        privacy.Outgoing(
            member_id=call.member_id,
            origin=call.origin,
            provider=call.provider.name,
            url=f"{call.provider.base_url}/v1/chat/completions",
            model=f"{call.provider.name}/{call.model_id}",
            body=json.dumps(call.body, ensure_ascii=False),
            request_id=call.request_id,
            found=call.found,
            redacted=call.redacted,
        )
    )


def request_record(ended: Ended) -> None:
    """The provider's record of the request, the egress row completed and the audit row, in
    one transaction."""
    cost, payment_hash = paid_for(ended.payment_purposes)
    usage = ended.usage or Usage(0, 0)
    with transaction.atomic():
        OutsideRequest.objects.create(
            provider_id=ended.call.provider.id,
            model_id=ended.call.model_id,
            member_id=ended.call.member_id,
            request_id=ended.call.request_id,
            outcome=ended.outcome,
            first_token_ms=ended.first_token_ms,
            total_ms=ended.total_ms,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_msat=cost,
            payment_purpose=" ".join(ended.payment_purposes),
            error=ended.error[:500],
        )
        if ended.egress_id is not None and not ended.sent:
            privacy.egress_forget(ended.egress_id)  # nothing of the question left the node
        elif ended.egress_id is not None:
            privacy.egress_end(
                ended.egress_id, outcome=ended.outcome, cost_msat=cost, payment_hash=payment_hash
            )
        audit_record(
            "outside_request",
            actor=f"member:{ended.call.member_id}" if ended.call.member_id else "",
            subject=f"{ended.call.provider.name}/{ended.call.model_id}",
            detail=f"{ended.outcome}, {cost} msat, {ended.call.origin}",
        )


def paid_for(purposes: Sequence[str]) -> tuple[int, str]:
    """What this request paid (amounts and fees: a key bought, then a top-up, say), and the
    last payment's hash: its proof is the wallet's. A payment still pending counts its amount:
    it may well be paid."""
    cost, payment_hash = 0, ""
    for purpose in purposes:
        payment = wallet.payment_for(purpose)
        if payment is not None and payment.state != payment.State.FAILED:
            cost += payment.amount_msat + (payment.fee_msat or 0)
            payment_hash = payment.payment_hash
    return cost, payment_hash
