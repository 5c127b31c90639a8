"""A PPQ-shaped prepaid provider (PayPerQ's account and top-up API, lightning.md §3.2).

    POST /accounts/create (no body) -> {"success": true, "credit_id", "api_key": "sk-…",
                                        "balance": 0}
    POST /topup/create/btc-lightning (Bearer sk-…) {"amount": N, "currency": "SATS"}
        -> {"created_at", "invoice_id", "amount", "currency", "expires_at", "checkout_url",
            "lightning_invoice", "crypto_amount_due"}: strings, as PPQ sends them; 100 to
            1,000,000 sats; the invoice expires in 15 minutes. The double takes SATS only.
    GET /topup/status/{invoice_id} (Bearer) -> {"invoice_id", "status": "New"|"Settled"|
        "Expired", "amount", "currency"} (BTCPay's words: PPQ's status shape is not published)
    POST /credits/balance {"credit_id"} (or Bearer) -> {"balance": <USD>}
    GET /topup/payment-methods -> {"methods": [{"method": "btc-lightning", limits…}]} (the
        shape of its entries is the double's own: PPQ's is not published)
    POST /v1/chat/completions (Bearer sk-…): a balance under `min_balance_msat` is a 402
        {"error": "Insufficient credit."} with no challenge; an answer is debited its cost.
        No cost header: PPQ sends none.

Balances are kept in msat and told in USD at a fixed rate (`sats_per_usd`), as PPQ tells them:
a client cannot turn them back into sats without a rate of its own. A paid top-up is credited
as soon as the node sees it paid (PPQ's payment processor tells it; nobody needs to ask).

Switches: the base ones and the invoice ones (invoices.py).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tests.providers.doubles.invoices import InvoiceDesk, MadeInvoice
from tests.providers.doubles.openai_shape import Handler, OpenAIShapedDouble, Refusal, Route
from tests.providers.doubles.routstr import bearer

MIN_TOPUP_SATS, MAX_TOPUP_SATS = 100, 1_000_000
INVOICE_SECONDS = 900


@dataclass
class Account:
    credit_id: str
    api_key: str
    balance_msat: int = 0


@dataclass
class Topup:
    id: str
    made: MadeInvoice
    amount_sats: int
    account: Account
    created_at: int
    credited: bool = False


class PPQDouble(OpenAIShapedDouble):
    name = "ppq"
    sats_per_usd = 1000  # $100,000 a bitcoin
    usd_per_prompt_token = 0.001
    usd_per_completion_token = 0.002
    min_balance_msat = 20_000

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.desk = InvoiceDesk(node, "ppq")
        self.lock = threading.Lock()
        self.accounts: dict[str, Account] = {}  # credit_id -> account
        self.topups: dict[str, Topup] = {}

    def extra_routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("POST", "/accounts/create"): self._account_create,
            ("POST", "/topup/create/btc-lightning"): self._topup_create,
            ("GET", "/topup/status/{invoice_id}"): self._topup_status,
            ("POST", "/credits/balance"): self._balance,
            ("GET", "/topup/payment-methods"): self._payment_methods,
        }

    def _payment_methods(self, handler: Handler, body: dict[str, Any]) -> None:
        lightning = {
            "method": "btc-lightning",
            "currencies": ["SATS", "BTC", "USD"],
            "min_sats": MIN_TOPUP_SATS,
            "max_sats": MAX_TOPUP_SATS,
            "expiry_minutes": INVOICE_SECONDS // 60,
        }
        handler.send_json(200, {"methods": [lightning]})

    def _account_create(self, handler: Handler, body: dict[str, Any]) -> None:
        account = Account(str(uuid.uuid4()), "sk-" + secrets.token_hex(24))
        with self.lock:
            self.accounts[account.credit_id] = account
        handler.send_json(
            200,
            {
                "success": True,
                "credit_id": account.credit_id,
                "api_key": account.api_key,
                "balance": 0,
            },
        )

    def _topup_create(self, handler: Handler, body: dict[str, Any]) -> None:
        account = self.account_of(handler)
        if account is None:
            return _unauthorized(handler)
        amount, currency = body.get("amount"), body.get("currency")
        if currency != "SATS":
            return handler.send_json(400, {"error": "The double takes currency SATS only."})
        if not isinstance(amount, int) or not MIN_TOPUP_SATS <= amount <= MAX_TOPUP_SATS:
            return handler.send_json(400, {"error": "Amount must be 100 to 1000000 sats."})
        made = self.desk.make(amount * 1000, "PPQ.ai top-up", self.switches, INVOICE_SECONDS)
        topup = Topup(secrets.token_urlsafe(16), made, amount, account, int(time.time()))
        with self.lock:
            self.topups[topup.id] = topup
        handler.send_json(
            200,
            {
                "created_at": str(topup.created_at),
                "invoice_id": topup.id,
                "amount": str(amount),
                "currency": "SATS",
                "expires_at": str(made.expires_at),
                "checkout_url": f"{self.url}/checkout/{topup.id}",
                "lightning_invoice": made.bolt11,
                "crypto_amount_due": f"{amount / 100_000_000:.8f}",
            },
        )

    def _topup_status(self, handler: Handler, body: dict[str, Any]) -> None:
        if self.account_of(handler) is None:
            return _unauthorized(handler)
        topup = self.topups.get(handler.path_params["invoice_id"])
        if topup is None:
            return handler.send_json(404, {"error": "Invoice not found"})
        self._credit_paid()
        status = "Settled" if topup.credited else "New"
        if status == "New" and time.time() > topup.made.expires_at:
            status = "Expired"
        answer = {"invoice_id": topup.id, "status": status, "amount": str(topup.amount_sats)}
        handler.send_json(200, {**answer, "currency": "SATS"})

    def _balance(self, handler: Handler, body: dict[str, Any]) -> None:
        account = self.accounts.get(str(body.get("credit_id", ""))) or self.account_of(handler)
        if account is None:
            return _unauthorized(handler)
        self._credit_paid()
        handler.send_json(200, {"balance": self.usd(account.balance_msat)})

    # Money -------------------------------------------------------------------------------
    def _credit_paid(self) -> None:
        """Credit every top-up the node has seen paid: PPQ hears of payments without asking."""
        for topup in list(self.topups.values()):
            if topup.credited or not self.desk.paid(topup.made.label):
                continue
            with self.lock:
                if not topup.credited:
                    topup.credited = True
                    topup.account.balance_msat += topup.amount_sats * 1000

    def account_of(self, handler: Handler) -> Account | None:
        key = bearer(handler) or handler.headers.get("api-key")
        return next((a for a in self.accounts.values() if a.api_key == key), None)

    def usd(self, msat: int) -> float:
        return round(msat / 1000 / self.sats_per_usd, 6)

    def balance_set(self, msat: int) -> None:
        """Every account now holds `msat` (a test's way to have spent the balance)."""
        with self.lock:
            for account in self.accounts.values():
                account.balance_msat = msat

    def keys_forget(self) -> None:
        """Every key is unknown from now on: the chat answers 401 on it."""
        with self.lock:
            self.accounts.clear()

    def cost_msat(self, usage: dict[str, int]) -> int:
        usd = (
            usage["prompt_tokens"] * self.usd_per_prompt_token
            + usage["completion_tokens"] * self.usd_per_completion_token
        )
        return math.ceil(usd * self.sats_per_usd * 1000)

    # The chat ----------------------------------------------------------------------------
    def refusal(self, handler: Handler, body: dict[str, Any]) -> Refusal | None:
        if bearer(handler) is None:
            message = "Missing x-credit-id, Authorization or x-api-key"
            return Refusal(401, {"error": {"message": message, "code": 401}})
        account = self.account_of(handler)
        if account is None:
            return Refusal(401, {"status": "error", "statusCode": 401, "message": "Unauthorized"})
        self._credit_paid()
        if account.balance_msat < self.min_balance_msat:
            return Refusal(402, {"error": "Insufficient credit."})
        return None

    def answer_headers(
        self, handler: Handler, body: dict[str, Any], usage: dict[str, int]
    ) -> list[tuple[str, str]]:
        account = self.account_of(handler)
        assert account is not None
        with self.lock:
            account.balance_msat -= self.cost_msat(usage)
        return []

    def model_entry(self, model_id: str) -> dict[str, Any]:
        pricing = {
            "prompt": f"{self.usd_per_prompt_token:.6f}",
            "completion": f"{self.usd_per_completion_token:.6f}",
        }
        return {
            **super().model_entry(model_id),
            "name": model_id,
            "context_length": 8192,
            "pricing": pricing,
            "privacyLevel": "anon",
        }


def _unauthorized(handler: Handler) -> None:
    handler.send_json(401, {"status": "error", "statusCode": 401, "message": "Unauthorized"})
