"""An MPP provider (the "Payment" HTTP authentication scheme, Lightning `charge` intent), on
loopback, paid through its own lightningd double; the draft Aperture serves (lightning.md §1.5).

A chat request without a usable credential gets `402`, an RFC 9457 problem+json body, and

    WWW-Authenticate: Payment id="…", realm="…", method="lightning", intent="charge",
        request="<base64url JSON>", expires="<RFC 3339>", description="…", opaque="…"

where `request` is `{"amount": "<sat>", "currency": "sat", "methodDetails": {"invoice",
"paymentHash", "network"}}` (JCS: sorted keys, no spaces) and `id` is
base64url(HMAC-SHA256(secret, realm|method|intent|request|expires|digest|opaque)).

It answers `Authorization: Payment <base64url JSON {"challenge": {every parameter, unchanged},
"payload": {"preimage": "<64 lowercase hex>"}}>` when the id recomputes from the echoed
parameters, the challenge has not expired and was not used before (one payment per request),
the preimage hashes to the paymentHash, and its node says the invoice is paid. The answer
carries `Payment-Receipt: <base64url JSON {status, method, timestamp, reference, challengeId}>`.

Price: the same agent-spec manifest as the L402 double, `GET /.well-known/l402.json`.

Switches, besides the base's (which act only on requests that got past payment):
    "overprice": the request and its invoice ask twice the published price
    "amount_mismatch": the request says the published price, the invoice asks twice it
    "amountless": the invoice has no amount
    "expired": the challenge expired a minute ago
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import manifest
from tests.providers.doubles.openai_shape import Handler, OpenAIShapedDouble, Refusal, Route

ID_FIELDS = ("realm", "method", "intent", "request", "expires", "digest", "opaque")
PROBLEM = "https://paymentauth.org/problems/payment-required"
PREIMAGE = re.compile(r"[0-9a-f]{64}")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url_decoded(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jcs(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MPPDouble(OpenAIShapedDouble):
    name = "mpp"
    realm = "mpp-double"

    def __init__(self, node: LightningdDouble, *, price_msat: int = 15_000) -> None:
        super().__init__()
        self.node = node
        self.price_msat = price_msat  # whole satoshis: the request's amount is in sat
        self.secret = secrets.token_bytes(32)
        self.authorizations: list[str] = []
        self.receipts: list[dict[str, Any]] = []  # every receipt sent, in order
        self.offered: list[dict[str, str]] = []  # every challenge's parameters, as sent
        self._used: set[str] = set()  # challenge ids already paid for and answered
        self._lock = threading.Lock()
        self._labels = itertools.count()

    # Who may ask -------------------------------------------------------------------------
    def refusal(self, handler: Handler, body: dict[str, Any]) -> Refusal | None:
        header = handler.headers.get("Authorization")
        if header is not None:
            self.authorizations.append(header)
        receipt = self.credential_accepted(header or "")
        if receipt is None:
            return self.challenge()
        handler.receipt = receipt  # type: ignore[attr-defined]
        return None

    def answer_headers(
        self, handler: Handler, body: dict[str, Any], usage: dict[str, int]
    ) -> list[tuple[str, str]]:
        receipt = handler.receipt  # type: ignore[attr-defined]
        self.receipts.append(receipt)
        return [("Payment-Receipt", b64url(jcs(receipt)))]

    def credential_accepted(self, header: str) -> dict[str, Any] | None:
        """The receipt for a credential that checks out and is paid, or None."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "payment":
            return None
        try:
            credential = json.loads(b64url_decoded(encoded.strip()))
            challenge, preimage = credential["challenge"], credential["payload"]["preimage"]
            request = json.loads(b64url_decoded(challenge["request"]))
            payment_hash = request["methodDetails"]["paymentHash"]
            expires = datetime.fromisoformat(challenge["expires"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not hmac.compare_digest(str(challenge.get("id", "")), self.id_of(challenge)):
            return None
        if expires < datetime.now(UTC) or not PREIMAGE.fullmatch(str(preimage)):
            return None
        if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != payment_hash:
            return None
        paid = self.node.rpc.listinvoices(payment_hash=payment_hash)["invoices"]
        if not paid or paid[0]["status"] != "paid":
            return None
        with self._lock:
            if challenge["id"] in self._used:
                return None
            self._used.add(challenge["id"])
        return {
            "status": "success",
            "method": "lightning",
            "timestamp": rfc3339(datetime.now(UTC)),
            "reference": payment_hash,
            "challengeId": challenge["id"],
        }

    # The challenge -----------------------------------------------------------------------
    def id_of(self, params: dict[str, Any]) -> str:
        joined = "|".join(str(params.get(name, "")) for name in ID_FIELDS)
        return b64url(hmac.new(self.secret, joined.encode(), hashlib.sha256).digest())

    def challenge(self) -> Refusal:
        switches = self.switches
        asked = self.price_msat * (2 if switches.get("overprice") else 1)
        invoiced: int | str = asked * (2 if switches.get("amount_mismatch") else 1)
        if switches.get("amountless"):
            invoiced = "any"
        label = f"mpp-{next(self._labels)}-{secrets.token_hex(4)}"
        invoice = self.node.rpc.invoice(invoiced, label, f"MPP charge for {self.name}")
        request = {
            "amount": str(asked // 1000),
            "currency": "sat",
            "methodDetails": {
                "invoice": invoice["bolt11"],
                "paymentHash": invoice["payment_hash"],
                "network": "regtest",
            },
        }
        params = {
            "realm": self.realm,
            "method": "lightning",
            "intent": "charge",
            "request": b64url(jcs(request)),
            "expires": rfc3339(
                datetime.now(UTC) + timedelta(minutes=-1 if switches.get("expired") else 5)
            ),
            "description": "One chat completion",
            "opaque": b64url(jcs({"n": len(self.offered)})),
        }
        params = {"id": self.id_of(params), **params}
        header = "Payment " + ", ".join(f'{name}="{value}"' for name, value in params.items())
        self.offered.append(params)
        problem = {
            "type": PROBLEM,
            "title": "Payment Required",
            "status": 402,
            "detail": "This resource requires a payment.",
        }
        return Refusal(402, problem, [("WWW-Authenticate", header)], "application/problem+json")

    # The price ---------------------------------------------------------------------------
    def extra_routes(self) -> dict[tuple[str, str], Route]:
        return {("GET", "/.well-known/l402.json"): self._manifest}

    def _manifest(self, handler: Handler, body: dict[str, Any]) -> None:
        handler.send_json(200, manifest(self, self.node.node_id, lambda model: self.price_msat))
