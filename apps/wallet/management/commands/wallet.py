"""`manage.py wallet status|pay|invoice|reconcile|budget|rune`: the wallet from a shell.

`wallet pay` exits with a code a script can act on (README, "Lightning wallet"):
0 paid; 3 failed, nothing was paid; 4 pending, the outcome is not known yet (`wallet
reconcile` settles it; never pay it again under another purpose); 5 refused before anything
was reserved. 1 is any other error, 2 a mistake in the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.wallet import budgets, services
from apps.wallet.backends.base import METHODS_CALLED
from apps.wallet.models import Budget
from apps.wallet.rune_setup import (
    RUNE_FILE,
    BadInput,
    RuneSetupError,
    owner_parse,
    rune_setup,
)
from apps.wallet.services import PaymentRefused, PayOrder

EXIT_PAID = 0
EXIT_FAILED = 3
EXIT_PENDING = 4
EXIT_REFUSED = 5
EXIT_CODES = {"complete": EXIT_PAID, "failed": EXIT_FAILED, "pending": EXIT_PENDING}
KNOWN_RUNE_WAIT = 15.0  # `rune --optional` with a rune already there: seconds for the node


class Command(BaseCommand):
    help = "Look at the Lightning node, pay an invoice, make one, settle pending payments."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("status", help="the node, as the Wallet page shows it")
        pay = actions.add_parser("pay", help="pay a BOLT11 invoice through the journal")
        pay.add_argument("bolt11")
        pay.add_argument("--purpose", required=True, help="paying the same purpose twice pays once")
        pay.add_argument("--max-sat", type=int, required=True, help="the most the invoice may ask")
        pay.add_argument(
            "--max-fee-sat", type=int, help="default: 5 sat or 1 %%, whichever is more"
        )
        pay.add_argument("--caller", default="owner:shell")
        invoice = actions.add_parser("invoice", help="make an invoice to be paid to this node")
        invoice.add_argument("amount_sat", type=int)
        invoice.add_argument("description")
        invoice.add_argument("--purpose", required=True)
        actions.add_parser(
            "reconcile", help="settle pending payments and learn which invoices were paid"
        )
        budget = actions.add_parser("budget", help="set a budget in sats (members': on the page)")
        scopes = [Budget.Scope.HOUSEHOLD, Budget.Scope.CALLER, Budget.Scope.REQUEST]
        budget.add_argument("scope", choices=scopes)
        budget.add_argument("limit_sat", type=int)
        budget.add_argument("--period", choices=Budget.Period.values, default="month")
        budget.add_argument("--caller", default="")
        self._add_rune_arguments(actions)

    def _add_rune_arguments(self, actions: Any) -> None:
        rune = actions.add_parser(
            "rune",
            help="make Sovereign's CLNRest rune over the node's socket (as root, at each start)",
        )
        rune.add_argument("--socket", required=True, type=Path, help="lightningd's lightning-rpc")
        rune.add_argument(
            "--ca", type=Path, help="CLNRest's ca.pem (none: CLNRest serves plain HTTP)"
        )
        rune.add_argument("--to", required=True, type=Path, help="writes <to>/rune and <to>/ca.pem")
        rune.add_argument("--owner", required=True, help="UID:GID the wallet runs as")
        rune.add_argument(
            "--wait", type=float, default=300.0, help="seconds to wait for the node (300)"
        )
        rune.add_argument(
            "--optional",
            action="store_true",
            help="a node that cannot give a rune now is no error: exit 0 (and wait at most "
            f"{KNOWN_RUNE_WAIT:g} s when a rune is already there)",
        )

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"_{action}")(**options)
        except PaymentRefused as refusal:
            raise CommandError(str(refusal), returncode=EXIT_REFUSED) from None
        except (ValueError, RuneSetupError) as error:
            raise CommandError(str(error)) from None

    def _status(self, **_: Any) -> None:
        self.stdout.write(json.dumps(services.node_summary(), indent=2))

    def _pay(self, bolt11: str, purpose: str, max_sat: int, max_fee_sat: int | None,
             caller: str, **_: Any) -> None:  # fmt: skip
        fee = None if max_fee_sat is None else max_fee_sat * 1000
        order = PayOrder(bolt11=bolt11, purpose=purpose, caller=caller,
                         max_amount_msat=max_sat * 1000, max_fee_msat=fee)  # fmt: skip
        earlier = services.payment_for(purpose) is not None
        payment = services.pay(order)
        if earlier:
            again = " To try again, give a new purpose." if payment.state == "failed" else ""
            self.stdout.write(
                "This purpose already paid this invoice, or tried to: nothing more was sent. "
                f"Its payment is {payment.state}.{again}"
            )
        self.stdout.write(f"{payment.state}\t{payment.amount_msat} msat\tfee {payment.fee_msat}"
                          f"\t{payment.preimage or payment.error}")  # fmt: skip
        if payment.state == "pending":
            self.stderr.write(
                "The outcome is not known yet: `wallet reconcile` settles it. "
                "Do not pay this invoice again under another purpose."
            )
        if EXIT_CODES[payment.state] != EXIT_PAID:
            raise SystemExit(EXIT_CODES[payment.state])

    def _invoice(self, amount_sat: int, description: str, purpose: str, **_: Any) -> None:
        made = services.invoice_create(
            amount_sat * 1000, description, purpose=purpose, caller="owner:shell"
        )
        self.stdout.write(made.bolt11)

    def _reconcile(self, **_: Any) -> None:
        """Payments first (what was paid), then received invoices (what was paid to us)."""
        counts: dict[str, int] = services.reconcile()
        counts["invoices_updated"] = services.invoices_sync()
        self.stdout.write(json.dumps(counts))

    def _rune(
        self, socket: Path, ca: Path | None, to: Path, owner: str, wait: float, optional: bool,
        **_: Any,
    ) -> None:  # fmt: skip
        ids = owner_parse(owner)
        if optional and (to / RUNE_FILE).exists():
            wait = min(wait, KNOWN_RUNE_WAIT)  # the rune from before most likely still works
        try:
            made = rune_setup(socket, ca, to, ids, wait)
        except BadInput:
            raise
        except (RuneSetupError, OSError) as error:
            message = _rune_failure(error, to)
            if not optional:
                raise CommandError(message) from None
            self.stderr.write(
                f"{message} Sovereign starts as it is; the wallet shows the node off."
            )
            return
        did = "Kept the rune" if made.reused else "Made a new rune"
        self.stdout.write(
            f"{did} (unique id {made.unique_id}) in {made.rune_file}, mode 0600; it allows "
            f"only: {', '.join(METHODS_CALLED)}."
        )
        if made.ca_file is not None:
            self.stdout.write(f"Copied CLNRest's CA certificate to {made.ca_file}, mode 0644.")
        self.stdout.write(f"Owned by {made.owner[0]}:{made.owner[1]}.")

    def _budget(self, scope: str, limit_sat: int, period: str, caller: str, **_: Any) -> None:
        if scope == Budget.Scope.REQUEST:
            period = Budget.Period.EACH
        budgets.budget_set(scope, period, limit_sat * 1000, caller=caller)
        shown = "in all" if period == Budget.Period.TOTAL else f"per {period}"
        self.stdout.write(f"{scope} budget: {limit_sat} sat {shown}")


def _rune_failure(error: Exception, to: Path) -> str:
    if isinstance(error, OSError):  # chown refused (not root?), a full disk
        return f"Cannot write into {to}: {error.strerror}."
    return str(error)
