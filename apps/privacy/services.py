"""What leaves the node: the egress record (and, with the privacy issue, redaction).

Every outside request, from every entry point, goes through apps/providers/calling.py, which
writes its egress row here before the first byte leaves and completes it when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.privacy.models import Egress


@dataclass(frozen=True)
class Outgoing:
    member_id: int | None
    origin: str
    provider: str
    url: str
    model: str
    body: str  # exactly as sent
    request_id: str


def egress_begin(outgoing: Outgoing) -> int:
    egress = Egress.objects.create(
        member_id=outgoing.member_id,
        origin=outgoing.origin,
        provider=outgoing.provider,
        url=outgoing.url,
        model=outgoing.model,
        body=outgoing.body,
        request_id=outgoing.request_id,
    )
    return egress.pk


def egress_end(egress_id: int, *, outcome: str, cost_msat: int, payment_hash: str) -> None:
    Egress.objects.filter(pk=egress_id).update(
        outcome=outcome, cost_msat=cost_msat, payment_hash=payment_hash
    )


def egress_rows(member: Any, *, everyone: bool, limit: int = 100) -> list[Egress]:
    """The newest records: the owner reads everyone's, a member their own."""
    rows = Egress.objects.all() if everyone else Egress.objects.filter(member=member)
    return list(rows.select_related("member")[:limit])
