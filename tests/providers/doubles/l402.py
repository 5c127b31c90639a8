"""An L402 provider in Aperture's shape, on loopback, paid through its own lightningd double.

A chat request without a usable credential gets `402` with two `WWW-Authenticate` lines, the
legacy one first, as Aperture sends them (lightning.md §1.3):

    WWW-Authenticate: LSAT macaroon="<b64>", invoice="<bolt11>"
    WWW-Authenticate: L402 macaroon="<b64>", invoice="<bolt11>"

The invoice is a real one from `node` (the provider's node); the macaroon is a libmacaroons v2
binary macaroon whose identifier is `uint16 0 || payment_hash || token_id` (doubles/macaroons.py).
It accepts `Authorization: (LSAT|L402) <macaroon>:<64 lowercase hex preimage>` once the macaroon
checks out with its root key, the preimage hashes to the identifier's payment hash, and its node
says that invoice is paid.

A token is a prepaid balance, as Aperture meters AI endpoints: it answers `requests_per_token`
requests (default large), then a new 402.

Price: published only in the agent-spec manifest, `GET /.well-known/l402.json` (free, never a
402): one resource per model, `{"path": "/v1/chat/completions", "method": "POST",
"capability": <model id>, "pricing": {"model": "fixed", "price_msat": N}}`. N is what one token's
invoice asks (`price_msat`, or `prices[model]`), so the most one request can cost.

Switches (`double.switches`, besides the base's status_500, cut_stream, silent, garbage, html,
huge, which act only on requests that got past payment):
    "token_param": `token=` instead of `macaroon=`
    "lsat_only": only the LSAT line, and only `LSAT` credentials are accepted
    "folded": both challenges on one comma-joined line
    "unquoted": parameter values without quotes
    "urlsafe_unpadded": the macaroon in URL-safe base64 without padding
    "overprice": the invoice asks twice the published price
    "amountless": the invoice has no amount
    "hash_mismatch": the macaroon's payment hash is not the invoice's
    "again_402": a valid, paid credential still gets a new 402
    "revoked": a valid, paid credential gets a 401 (the spec's answer to an invalid one)
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import secrets
import threading
from typing import Any

from tests.lightningd import LightningdDouble
from tests.providers.doubles import macaroons
from tests.providers.doubles.openai_shape import Handler, OpenAIShapedDouble, Refusal, Route

# Aperture's own pattern for a credential (`auth/authenticator.go`), anchored.
CREDENTIAL = re.compile(r"(LSAT|L402) (.*?):([a-f0-9]{64})")
CHAT_PATH = "/v1/chat/completions"


class L402Double(OpenAIShapedDouble):
    name = "l402"

    def __init__(
        self,
        node: LightningdDouble,
        *,
        price_msat: int = 20_000,
        requests_per_token: int = 1_000,
        prices: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.node = node
        self.price_msat = price_msat
        self.prices = prices or {}
        self.requests_per_token = requests_per_token
        self.root_key = secrets.token_bytes(32)
        self.tokens: dict[str, int] = {}  # token id -> requests answered with it
        self.authorizations: list[str] = []  # every Authorization header a chat request had
        self.offered: list[str] = []  # every token sent in a challenge, as sent
        self._lock = threading.Lock()
        self._labels = itertools.count()

    # Who may ask -------------------------------------------------------------------------
    def refusal(self, handler: Handler, body: dict[str, Any]) -> Refusal | None:
        header = handler.headers.get("Authorization")
        if header is not None:
            self.authorizations.append(header)
        token_id = self.token_accepted(header or "")
        if token_id is not None and self.switches.get("revoked"):
            message = {"error": {"message": "token revoked"}}
            return Refusal(401, message)  # an invalid credential gets a 401 (the spec allows it)
        if token_id is None or self.switches.get("again_402"):
            return self.challenge(str(body.get("model", "")))
        with self._lock:
            if self.tokens.get(token_id, 0) >= self.requests_per_token:
                return self.challenge(str(body.get("model", "")))
            self.tokens[token_id] = self.tokens.get(token_id, 0) + 1
        return None

    def token_accepted(self, header: str) -> str | None:
        """The token id of a credential that checks out and is paid, or None."""
        found = CREDENTIAL.fullmatch(header)
        if found is None:
            return None
        scheme, token, preimage = found.groups()
        if self.switches.get("lsat_only") and scheme != "LSAT":
            return None
        try:
            macaroon = macaroons.parse(macaroons.b64decode_any(token))
        except ValueError:
            return None
        if not macaroons.verified(self.root_key, macaroon):
            return None
        if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != macaroon.payment_hash:
            return None
        paid = self.node.rpc.listinvoices(payment_hash=macaroon.payment_hash)["invoices"]
        if not paid or paid[0]["status"] != "paid":
            return None
        return macaroon.token_id

    # The challenge -----------------------------------------------------------------------
    def price_of(self, model_id: str) -> int:
        return self.prices.get(model_id, self.price_msat)

    @property
    def challenges(self) -> int:
        """How many 402s were sent."""
        return len(self.offered)

    def challenge(self, model_id: str) -> Refusal:
        switches = self.switches
        amount: int | str = self.price_of(model_id) * (2 if switches.get("overprice") else 1)
        if switches.get("amountless"):
            amount = "any"
        label = f"l402-{next(self._labels)}-{secrets.token_hex(4)}"
        invoice = self.node.rpc.invoice(amount, label, f"L402 token for {self.name}")
        payment_hash = invoice["payment_hash"]
        if switches.get("hash_mismatch"):
            payment_hash = secrets.token_hex(32)
        identifier = macaroons.l402_identifier(payment_hash, secrets.token_bytes(32))
        raw = macaroons.mint(self.root_key, identifier, "l402", (b"services=chat:0",))
        if switches.get("urlsafe_unpadded"):
            token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        else:
            token = base64.b64encode(raw).decode()
        self.offered.append(token)
        body = {"error": {"message": "payment required"}}
        return Refusal(402, body, self.headers(token, invoice))

    def headers(self, token: str, invoice: dict[str, Any]) -> list[tuple[str, str]]:
        quote = "" if self.switches.get("unquoted") else '"'
        key = "token" if self.switches.get("token_param") else "macaroon"
        params = f"{key}={quote}{token}{quote}, invoice={quote}{invoice['bolt11']}{quote}"
        schemes = ["LSAT"] if self.switches.get("lsat_only") else ["LSAT", "L402"]
        values = [f"{scheme} {params}" for scheme in schemes]
        if self.switches.get("folded"):
            return [("WWW-Authenticate", ", ".join(values))]
        return [("WWW-Authenticate", value) for value in values]

    # The price ---------------------------------------------------------------------------
    def extra_routes(self) -> dict[tuple[str, str], Route]:
        return {("GET", "/.well-known/l402.json"): self._manifest}

    def _manifest(self, handler: Handler, body: dict[str, Any]) -> None:
        handler.send_json(200, manifest(self, self.node.node_id, self.price_of))


def manifest(double: OpenAIShapedDouble, node_id: str, price_of: Any) -> dict[str, Any]:
    """The agent-spec manifest: one fixed-price resource per model (its id as capability)."""
    resources = [
        {
            "path": CHAT_PATH,
            "method": "POST",
            "capability": model_id,
            "pricing": {"model": "fixed", "price_msat": price_of(model_id)},
        }
        for model_id in double.models
    ]
    return {
        "version": "1.0",
        "provider": {"name": double.name, "node_pubkey": node_id},
        "currencies": ["msat"],
        "services": [
            {
                "name": "chat",
                "tiers": [{"tier": 0}],
                "capabilities": list(double.models),
                "resources": resources,
            }
        ],
    }
