"""What strangers' payments bought, for the wallet's ledger: an invoice paid into a prepaid
balance (its first or a top-up) is shown with the answers that balance paid for."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Sum

from apps.sharing.models import Balance, Credit, Sale
from apps.wallet.templatetags.wallet import sats

# How each way of paying is named to the owner.
KIND_SHOWN: dict[str, str] = {
    Balance.Kind.L402: "L402",
    Balance.Kind.MPP: "MPP",
    Balance.Kind.KEY: "sk- key",
}


def kind_shown(kind: str) -> str:
    return KIND_SHOWN.get(kind, kind)  # choices are str: "l402" finds Kind.L402


def sold_for_invoices(invoice_ids: list[int]) -> dict[int, str]:
    """For each invoice that paid into a stranger's balance: its kind and what it bought so
    far, model by model ("L402 balance 4: 3 answers of qwen3, 63 sat")."""
    credits = Credit.objects.filter(invoice_id__in=invoice_ids).select_related("balance")
    balances = {credit.balance_id for credit in credits}
    bought: dict[int, list[str]] = defaultdict(list)
    per_model = (
        Sale.objects.filter(balance_id__in=balances)
        .values("balance_id", "model")
        .annotate(answers=Count("id"), msat=Sum("cost_msat"))
        .order_by("balance_id", "model")
    )
    for row in per_model:
        answers = f"{row['answers']} answer{'' if row['answers'] == 1 else 's'}"
        bought[row["balance_id"]].append(f"{answers} of {row['model']}, {sats(row['msat'])}")
    return {
        credit.invoice_id: f"{kind_shown(credit.balance.kind)} balance {credit.balance_id}: "
        + ("; ".join(bought[credit.balance_id]) or "nothing bought yet")
        for credit in credits
    }
