"""The ledger: every payment and invoice in one list, and its CSV export.

Anyone can check a proof: sha256(preimage) must equal the invoice's payment hash. A preimage
that may still be a live credential (an L402 token) is left out of exports.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from apps.wallet.models import Invoice, Payment, preimage_matches

COLUMNS = ["when", "direction", "caused_by", "purpose", "amount_msat", "fee_msat", "state",
           "payment_hash", "preimage", "proof_holds", "bolt11"]  # fmt: skip
SALES_CALLER = "sharing"  # the caller of every invoice a stranger pays (apps/sharing)


@dataclass(frozen=True)
class Entry:
    when: datetime
    direction: str  # "out" (a payment) or "in" (an invoice)
    caused_by: str
    purpose: str
    amount_msat: int
    fee_msat: int | None
    state: str
    payment_hash: str
    preimage: str
    preimage_secret: bool  # a live credential: shown to the owner, never exported
    proof_holds: bool
    bolt11: str
    sold: str = ""  # for a stranger's payment (apps/sharing): what it bought


def entries(limit: int | None = None) -> list[Entry]:
    payments = [_payment_entry(p) for p in Payment.objects.all()[:limit]]
    invoices = list(Invoice.objects.all()[:limit])
    sold = _sold([invoice.pk for invoice in invoices if invoice.caller == SALES_CALLER])
    received = [_invoice_entry(i, sold.get(i.pk, "")) for i in invoices]
    return sorted([*payments, *received], key=lambda entry: entry.when, reverse=True)[:limit]


def _sold(invoice_ids: list[int]) -> dict[int, str]:
    if not invoice_ids:
        return {}
    from apps.sharing.sales import sold_for_invoices  # the app that sells imports this one

    return sold_for_invoices(invoice_ids)


def _payment_entry(payment: Payment) -> Entry:
    return Entry(
        when=payment.created_at, direction="out",
        caused_by=f"{payment.caller} for {payment.payer}" if payment.payer else payment.caller,
        purpose=payment.purpose, amount_msat=payment.amount_msat, fee_msat=payment.fee_msat,
        state=payment.state, payment_hash=payment.payment_hash, preimage=payment.preimage,
        preimage_secret=payment.token_may_be_live, proof_holds=payment.proof_holds,
        bolt11=payment.bolt11,
    )  # fmt: skip


def _invoice_entry(invoice: Invoice, sold: str = "") -> Entry:
    return Entry(
        when=invoice.created_at, direction="in", caused_by=invoice.caller,
        purpose=invoice.purpose, amount_msat=invoice.amount_received_msat or invoice.amount_msat,
        fee_msat=None, state=invoice.state, payment_hash=invoice.payment_hash,
        preimage=invoice.preimage, preimage_secret=False,
        proof_holds=preimage_matches(invoice.preimage, invoice.payment_hash),
        bolt11=invoice.bolt11, sold=sold,
    )  # fmt: skip


def csv_rows() -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for entry in entries():
        preimage = "(hidden: may be a live token)" if entry.preimage_secret else entry.preimage
        writer.writerow([
            entry.when.isoformat(), entry.direction, entry.caused_by, entry.purpose,
            entry.amount_msat, "" if entry.fee_msat is None else entry.fee_msat, entry.state,
            entry.payment_hash, preimage, entry.proof_holds, entry.bolt11,
        ])  # fmt: skip
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
