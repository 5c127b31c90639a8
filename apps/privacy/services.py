"""What leaves the node: the egress record (and, with the privacy issue, redaction).

Every outside request, from every entry point, goes through apps/providers/calling.py, which
writes its egress row here before the first byte leaves and completes it when it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

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
    found: dict[str, int]  # what the privacy hook took out: kinds and counts, never values
    redacted: bool  # False: a trusted provider, nothing taken out


# Written before every outside request leaves: a fixed statement, not one the ORM compiles
# each time (a third of a millisecond of the first token's wait; see docs/benchmarks.md).
_BEGIN_SQL = (
    "INSERT INTO privacy_egress (member_id, origin, provider, url, model, body, request_id, "
    "found, redacted, outcome, cost_msat, payment_hash, sent_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '', 0, '', %s)"
)


def egress_begin(outgoing: Outgoing) -> int:
    params = [
        outgoing.member_id,
        outgoing.origin,
        outgoing.provider,
        outgoing.url,
        outgoing.model,
        outgoing.body,
        outgoing.request_id,
        connection.ops.adapt_json_value(outgoing.found, None),
        outgoing.redacted,
        connection.ops.adapt_datetimefield_value(timezone.now()),
    ]
    with connection.cursor() as cursor:
        if connection.features.can_return_columns_from_insert:
            cursor.execute(_BEGIN_SQL + " RETURNING id", params)
            return int(cursor.fetchone()[0])
        cursor.execute(_BEGIN_SQL, params)
        return int(cursor.lastrowid)


def egress_forget(egress_id: int) -> None:
    """The request ended before anything of it was sent: there is nothing to record."""
    Egress.objects.filter(pk=egress_id).delete()


def egress_end(egress_id: int, *, outcome: str, cost_msat: int, payment_hash: str) -> None:
    Egress.objects.filter(pk=egress_id).update(
        outcome=outcome, cost_msat=cost_msat, payment_hash=payment_hash
    )


def egress_body_set(egress_id: int, body: str) -> None:
    """What a request sends besides its URL, once known (a paid GET's retry: its credential,
    written before the payment that makes it usable)."""
    Egress.objects.filter(pk=egress_id).update(body=body)


def egress_body_of(request_id: str) -> str:
    """The newest body recorded for this request id ('' when none): what an earlier run of it
    sent, or was about to send."""
    row = Egress.objects.filter(request_id=request_id).exclude(body="").order_by("-id").first()
    return "" if row is None else row.body


def egress_rows(member: Any, *, everyone: bool, limit: int = 100) -> list[Egress]:
    """The newest records: the owner reads everyone's, a member their own."""
    return list(_egress_of(member, everyone=everyone)[:limit])


def egress_all(member: Any, *, everyone: bool) -> Iterator[Egress]:
    """Every record kept, newest first, read in batches (the export)."""
    return _egress_of(member, everyone=everyone).iterator(chunk_size=200)


def _egress_of(member: Any, *, everyone: bool) -> QuerySet[Egress]:
    rows = Egress.objects.all() if everyone else Egress.objects.filter(member=member)
    return rows.select_related("member")
