"""What unpaid 402s and key invoices leave behind, pruned: a balance whose only invoice expired
unpaid can never be paid into (the node refuses an expired invoice), so it and its Credit go.
The wallet's Invoice row stays, as the wallet's sync marked it (expired), in the node's ledger.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Q

from apps.sharing.models import Balance, Credit
from apps.wallet.models import Invoice


def unpaid_balances_pruned() -> int:
    """Delete every balance whose one invoice expired unpaid (nothing credited, nothing sold);
    how many went."""
    never_paid = (
        Balance.objects.annotate(
            invoices=Count("credits"),
            expired=Count(
                "credits",
                filter=Q(credits__credited_at=None, credits__invoice__state=Invoice.State.EXPIRED),
            ),
        )
        .filter(invoices=1, expired=1, balance_msat=0, sales=None)
        .values_list("pk", flat=True)
    )
    with transaction.atomic():
        doomed = list(never_paid)
        Credit.objects.filter(balance_id__in=doomed, credited_at=None).delete()
        deleted, _ = Balance.objects.filter(pk__in=doomed, credits=None).delete()
    return deleted
