"""A node selling answers to strangers, and a stranger who pays: shared by the tests of L402,
MPP and receipts.

The seller is this process's node (a live server, the real engine on the bundled model, the
household's lightningd double); the stranger pays from a second double joined to it by a
channel. The stranger's client is written here from the rules (lightning.md §1), not with the
product's outside-provider client, and reads macaroons with the tests' own implementation
(tests/providers/doubles/macaroons.py), not the product's.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from apps.sharing.models import Offer
from tests.inference.conftest import MODEL, bundled_local_model
from tests.lightningd import LightningdDouble
from tests.providers.doubles import macaroons as test_macaroons

PRICE_MSAT = 21_000
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHALLENGE = re.compile(r"\s*([A-Za-z0-9]+)\s+(.*)")
PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')


@pytest.fixture
def seller_node(tmp_path: Path, settings: Any) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "seller", alias="seller") as node:
        settings.LIGHTNING_RPC = str(node.rpc_file)
        yield node


@pytest.fixture
def payer(tmp_path: Path, seller_node: LightningdDouble) -> Iterator[LightningdDouble]:
    """The stranger's own node, with a channel to the seller's."""
    with LightningdDouble(tmp_path / "payer", alias="payer") as node:
        node.connect(seller_node, amount_sat=1_000_000)
        yield node


@pytest.fixture
def on_sale(engine: Any, owner: Any, seller_node: LightningdDouble) -> Offer:
    """The bundled model on sale at a price per request."""
    bundled_local_model()
    return Offer.objects.create(model=MODEL, price_msat=PRICE_MSAT)


@dataclass
class Reply:
    status: int
    headers: Any  # email.message.Message: get_all() gives every line of a header
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def challenges(self) -> list[tuple[str, dict[str, str]]]:
        """Every `WWW-Authenticate` line: its scheme and its quoted parameters."""
        found = []
        for line in self.headers.get_all("WWW-Authenticate") or []:
            matched = CHALLENGE.match(line)
            assert matched is not None, line
            found.append((matched.group(1), dict(PARAM.findall(matched.group(2)))))
        return found


def post(url: str, body: dict[str, Any], authorization: str = "", **headers: str) -> Reply:
    sent = {"Content-Type": "application/json", **headers}
    if authorization:
        sent["Authorization"] = authorization
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers=sent, method="POST"
    )
    return _sent(request)


def get(url: str, path: str) -> Reply:
    return _sent(urllib.request.Request(f"{url}{path}"))


def _sent(request: urllib.request.Request) -> Reply:
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (loopback)
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def asked(stream: bool = False, max_tokens: int = 8) -> dict[str, Any]:
    return {"model": MODEL, "messages": QUESTION, "max_tokens": max_tokens, "temperature": 0,
            "seed": 3, "stream": stream}  # fmt: skip


@dataclass
class Token:
    """An L402 token as a client keeps it: the macaroon as received and, once paid, the
    preimage."""

    macaroon: str
    invoice: str
    payment_hash: str
    preimage: str = ""
    scheme: str = "L402"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def authorization(self) -> str:
        return f"{self.scheme} {self.macaroon}:{self.preimage}"


def l402_token(reply: Reply) -> Token:
    """The L402 challenge of a 402, read by the rules: the `L402` line (not the legacy one),
    the macaroon's identifier carrying the payment hash the invoice must have."""
    assert reply.status == 402, reply.body
    l402 = [params for scheme, params in reply.challenges() if scheme.upper() == "L402"]
    macaroon, invoice = l402[0]["macaroon"], l402[0]["invoice"]
    parsed = test_macaroons.parse(test_macaroons.b64decode_any(macaroon))
    assert parsed.identifier[:2] == b"\0\0" and len(parsed.identifier) == 66
    return Token(macaroon, invoice, parsed.payment_hash)


def paid(token: Token, payer: LightningdDouble) -> Token:
    """Pay the token's invoice once the payer's node agrees it is bound to the token."""
    decoded = payer.rpc.decode(token.invoice)
    assert decoded["payment_hash"] == token.payment_hash
    token.preimage = payer.rpc.xpay(token.invoice)["payment_preimage"]
    return token


def bought(url: str, payer: LightningdDouble) -> Token:
    return paid(l402_token(post(url, asked())), payer)


def receipt_of_header(reply: Reply) -> dict[str, Any]:
    raw = reply.headers["X-Sovereign-Receipt"]
    receipt: dict[str, Any] = json.loads(base64.b64decode(raw))
    return receipt
