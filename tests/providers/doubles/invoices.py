"""A provider's own Lightning node, as its doubles see it: invoices made and found paid.

The node is a lightningd double (tests/lightningd) the test joins to the household's node by a
channel, so the household's wallet really pays these invoices and the payee really sees them
paid. Switches the provider doubles share (`double.switches`):
    "overprice": the invoice asks twice the amount the client asked for
    "amountless": the invoice carries no amount at all
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

_labels = itertools.count()


@dataclass(frozen=True)
class MadeInvoice:
    label: str
    bolt11: str
    payment_hash: str
    amount_msat: int  # what was asked for (the invoice may say otherwise, by a switch)
    expires_at: int


class InvoiceDesk:
    """Invoices from one lightningd double (anything with `.rpc`, a pyln-client)."""

    def __init__(self, node: Any, prefix: str) -> None:
        self.node = node
        self.prefix = prefix

    def make(
        self, amount_msat: int, description: str, switches: dict[str, Any], expiry: int
    ) -> MadeInvoice:
        label = f"{self.prefix}-{next(_labels)}-{time.monotonic_ns()}"
        asked: int | str = amount_msat
        if switches.get("amountless"):
            asked = "any"
        elif switches.get("overprice"):
            asked = amount_msat * 2
        made = self.node.rpc.invoice(asked, label, description, expiry=expiry)
        return MadeInvoice(
            label, made["bolt11"], made["payment_hash"], amount_msat, int(time.time()) + expiry
        )

    def paid(self, label: str) -> bool:
        found = self.node.rpc.listinvoices(label=label)["invoices"]
        return bool(found) and found[0]["status"] == "paid"

    def received_msat(self) -> int:
        """Everything this node was paid through its invoices."""
        invoices = self.node.rpc.listinvoices()["invoices"]
        return sum(int(i.get("amount_received_msat", 0)) for i in invoices if i["status"] == "paid")
