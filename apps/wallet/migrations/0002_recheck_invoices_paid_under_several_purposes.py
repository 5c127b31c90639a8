"""Rows that settled from another purpose's payment of the same invoice go back to pending.

Before this, settling matched the node's records by payment hash alone, so paying one invoice
under several purposes left every row `complete` with the one preimage. The reconciler now
reads only records carrying a row's own label: reopened, the row the node really paid settles
`complete` again and the others `failed`. node_answered is set because each of those xpay
calls got the node's verdict (219, or -3 while the first was in flight). The preimage is kept:
a row whose node no longer has any record of the invoice stays pending with its proof.
"""

from django.db import migrations
from django.db.models import Count


def reopen(apps, schema_editor):  # type: ignore[no-untyped-def]
    Payment = apps.get_model("wallet", "Payment")
    shared = (
        Payment.objects.filter(state="complete")
        .values("payment_hash")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
        .values_list("payment_hash", flat=True)
    )
    Payment.objects.filter(state="complete", payment_hash__in=list(shared)).update(
        state="pending",
        fee_msat=None,
        settled_at=None,
        node_answered=True,
        error="Re-checked: the invoice was paid under several purposes.",
    )


class Migration(migrations.Migration):
    dependencies = [("wallet", "0001_initial")]

    operations = [migrations.RunPython(reopen, migrations.RunPython.noop)]
