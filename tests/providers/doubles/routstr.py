"""A Routstr-shaped prepaid provider (routstr-core's Lightning flow, lightning.md §3.1).

    POST /lightning/invoice {"amount_sats", "purpose": "create"|"topup"}   (topup: Bearer sk-…)
        -> {invoice_id, bolt11, amount_sats, expires_at, payment_hash}
           `payment_hash` holds a mint quote id, as routstr-core's does (the Cashu quote's id,
           not the invoice's hash): a client must take the hash from its node's `decode`.
    GET /lightning/invoice/{invoice_id}/status
        -> {status: "pending"|"paid"|"expired", api_key, amount_sats, paid_at, created_at,
           expires_at}; a paid invoice is credited the first time it is seen paid: "create"
           makes a new key holding amount_sats, "topup" adds to the key that asked.
    POST /lightning/recover {"bolt11"} -> the same status object, found by the invoice.
    GET /v1/info -> {name, description, version, npub, mints, http_url, onion_url, …}
    GET /v1/balance/info (Bearer) -> {"api_key", "balance" (msat), "reserved": 0}
    POST /v1/chat/completions (Bearer sk-…): the balance must hold the model's max_cost
        (sats_pricing.max_cost), else 402 with no challenge; an answer is debited its cost and
        carries X-Routstr-Cost-Msats (and the input and output parts).

The 402 body is routstr-core's error envelope, with the earlier release's numbers beside it:
    {"detail": {"error": {"message", "type": "insufficient_quota", "code":
     "insufficient_balance"}, "balance", "required", "shortfall"}}   (msat)

Switches, besides the base ones and the invoice ones (invoices.py):
    "lose_status": the first status answer that finds the invoice paid is lost (the key is made,
                   then the connection closes with no answer); /lightning/recover finds it.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.providers.doubles.invoices import InvoiceDesk, MadeInvoice
from tests.providers.doubles.openai_shape import Handler, OpenAIShapedDouble, Refusal, Route

MAX_INVOICE_SATS = 1_000_000
INVOICE_SECONDS = 3600


@dataclass
class RoutstrInvoice:
    id: str
    made: MadeInvoice
    amount_sats: int
    purpose: str  # create | topup
    quote_id: str  # what routstr-core calls the payment hash
    api_key: str | None  # the key it tops up, or the key it made once paid
    created_at: int
    paid_at: int | None = None


class RoutstrDouble(OpenAIShapedDouble):
    name = "routstr"
    # Prices as sats_pricing publishes them: sats per token, max_cost in sats (not msat).
    prompt_sats_per_token = 1.0
    completion_sats_per_token = 2.0
    max_cost_sats = 60

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.desk = InvoiceDesk(node, "routstr")
        self.lock = threading.Lock()
        self.invoices: dict[str, RoutstrInvoice] = {}
        self.balances: dict[str, int] = {}  # key -> msat
        self.status_asked = 0
        self.recovered = 0  # /lightning/recover answers that found a paid invoice

    # Routes ------------------------------------------------------------------------------
    def extra_routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("POST", "/lightning/invoice"): self._invoice_create,
            ("GET", "/lightning/invoice/{invoice_id}/status"): self._invoice_status,
            ("POST", "/lightning/recover"): self._recover,
            ("GET", "/v1/balance/info"): self._balance_info,
            ("GET", "/v1/info"): self._info,
        }

    def _info(self, handler: Handler, body: dict[str, Any]) -> None:
        info = {
            "name": "Routstr double",
            "description": "A Routstr-shaped node for tests",
            "version": "0.2.0",
            "npub": "",
            "mints": ["http://mint.invalid"],
            "http_url": self.url,
            "onion_url": "",
            "child_key_cost_msats": 0,
        }
        handler.send_json(200, info)

    def _invoice_create(self, handler: Handler, body: dict[str, Any]) -> None:
        amount, purpose = body.get("amount_sats"), body.get("purpose", "create")
        if not isinstance(amount, int) or not 0 < amount <= MAX_INVOICE_SATS:
            return _detail(handler, 422, "amount_sats must be an integer in 1..1000000")
        if purpose not in ("create", "topup"):
            return _detail(handler, 422, "purpose must be create or topup")
        key = None
        if purpose == "topup":
            key = bearer(handler)
            if key is None:
                return _detail(handler, 401, "Authorization bearer api key is required for topup")
            if not key.startswith("sk-"):
                return _detail(handler, 400, "Invalid API key format")
            if key not in self.balances:
                return _detail(handler, 404, "API key not found")
        description = f"Routstr {purpose} {amount} sats"
        made = self.desk.make(amount * 1000, description, self.switches, INVOICE_SECONDS)
        invoice = RoutstrInvoice(
            secrets.token_urlsafe(16),
            made,
            amount,
            purpose,
            secrets.token_urlsafe(22),
            key,
            int(time.time()),
        )
        with self.lock:
            self.invoices[invoice.id] = invoice
        handler.send_json(
            200,
            {
                "invoice_id": invoice.id,
                "bolt11": made.bolt11,
                "amount_sats": amount,
                "expires_at": made.expires_at,
                "payment_hash": invoice.quote_id,
            },
        )

    def _invoice_status(self, handler: Handler, body: dict[str, Any]) -> None:
        invoice = self.invoices.get(handler.path_params["invoice_id"])
        if invoice is None:
            return _detail(handler, 404, "Invoice not found")
        self.status_asked += 1
        newly_paid = self._settle(invoice)
        if newly_paid and self.switches.pop("lose_status", False):
            return  # the answer is lost: the connection closes with nothing sent
        handler.send_json(200, self._status(invoice))

    def _recover(self, handler: Handler, body: dict[str, Any]) -> None:
        bolt11 = str(body.get("bolt11", "")).strip().lower()
        found = [i for i in self.invoices.values() if i.made.bolt11.lower() == bolt11]
        if not found:
            return _detail(handler, 404, "Invoice not found")
        self._settle(found[0])
        if found[0].paid_at is not None:
            self.recovered += 1
        handler.send_json(200, self._status(found[0]))

    def _balance_info(self, handler: Handler, body: dict[str, Any]) -> None:
        key = bearer(handler)
        if key is None or key not in self.balances:
            return _detail(handler, 401, "Invalid API key")
        handler.send_json(200, {"api_key": key, "balance": self.balances[key], "reserved": 0})

    # Money -------------------------------------------------------------------------------
    def _settle(self, invoice: RoutstrInvoice) -> bool:
        """Credit a newly paid invoice, once; True if this call did it."""
        if invoice.paid_at is not None or not self.desk.paid(invoice.made.label):
            return False
        with self.lock:
            if invoice.paid_at is not None:
                return False
            invoice.paid_at = int(time.time())
            if invoice.purpose == "create":
                invoice.api_key = "sk-" + secrets.token_hex(32)
                self.balances[invoice.api_key] = 0
            assert invoice.api_key is not None
            self.balances[invoice.api_key] += invoice.amount_sats * 1000
        return True

    def _status(self, invoice: RoutstrInvoice) -> dict[str, Any]:
        status = "paid" if invoice.paid_at is not None else "pending"
        if status == "pending" and time.time() > invoice.made.expires_at:
            status = "expired"
        return {
            "status": status,
            "api_key": invoice.api_key if status == "paid" else None,
            "amount_sats": invoice.amount_sats,
            "paid_at": invoice.paid_at,
            "created_at": invoice.created_at,
            "expires_at": invoice.made.expires_at,
        }

    def balance_set(self, msat: int) -> None:
        """Every key now holds `msat` (a test's way to have spent the balance)."""
        with self.lock:
            for key in self.balances:
                self.balances[key] = msat

    def keys_forget(self) -> None:
        """Every key is unknown from now on: the chat answers 401 on it."""
        with self.lock:
            self.balances.clear()

    @property
    def required_msat(self) -> int:
        return self.max_cost_sats * 1000

    def cost_msat(self, usage: dict[str, int]) -> tuple[int, int]:
        prompt = math.ceil(usage["prompt_tokens"] * self.prompt_sats_per_token * 1000)
        completion = math.ceil(usage["completion_tokens"] * self.completion_sats_per_token * 1000)
        return prompt, completion

    # The chat ----------------------------------------------------------------------------
    def refusal(self, handler: Handler, body: dict[str, Any]) -> Refusal | None:
        key = bearer(handler)
        if key is None:
            return Refusal(401, {"detail": _error("API key or Cashu token required")})
        if key not in self.balances:
            return Refusal(401, {"detail": _error("Invalid API key")})
        balance = self.balances[key]
        if balance >= self.required_msat:
            return None
        message = (
            f"Insufficient balance: {self.required_msat} msats required for this model; "
            f"{balance} msats available."
        )
        detail = {
            "error": {
                "message": message,
                "type": "insufficient_quota",
                "code": "insufficient_balance",
            },
            "balance": balance,
            "required": self.required_msat,
            "shortfall": self.required_msat - balance,
        }
        return Refusal(402, {"detail": detail})

    def answer_headers(
        self, handler: Handler, body: dict[str, Any], usage: dict[str, int]
    ) -> list[tuple[str, str]]:
        prompt, completion = self.cost_msat(usage)
        cost = min(prompt + completion, self.required_msat)
        key = bearer(handler)
        assert key is not None
        with self.lock:
            self.balances[key] -= cost
        return [
            ("X-Routstr-Cost-Msats", str(cost)),
            ("X-Routstr-Input-Cost-Msats", str(prompt)),
            ("X-Routstr-Output-Cost-Msats", str(completion)),
        ]

    def model_entry(self, model_id: str) -> dict[str, Any]:
        sats = {
            "prompt": self.prompt_sats_per_token,
            "completion": self.completion_sats_per_token,
            "request": 0.0,
            "image": 0.0,
            "web_search": 0.0,
            "internal_reasoning": 0.0,
            "max_prompt_cost": self.max_cost_sats / 2,
            "max_completion_cost": self.max_cost_sats,
            "max_cost": self.max_cost_sats,
        }
        usd = {name: value / 1500 for name, value in sats.items()}  # a fixed $66,667/BTC
        return {
            **super().model_entry(model_id),
            "name": model_id,
            "context_length": 8192,
            "pricing": usd,
            "sats_pricing": sats,
            "top_provider": {"context_length": 8192, "max_completion_tokens": 1024},
        }


def bearer(handler: Handler) -> str | None:
    value = handler.headers.get("Authorization", "")
    if not value.lower().startswith("bearer "):
        return None
    return value[7:].strip() or None


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": "api_key"}}


def _detail(handler: Handler, status: int, message: str) -> None:
    handler.send_json(status, {"detail": message})
