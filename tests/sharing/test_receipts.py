"""Receipts: a sold answer carries a Nostr event signed with the node's key, which anyone can
check. Checked here with a second implementation (the NIP-01 id by hand, BIP-340 with
coincurve), not with the nostr-sdk the node signs with."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from coincurve import PublicKeyXOnly
from django.test import AsyncClient

from apps.identity import services as identity
from apps.sharing import receipts
from apps.sharing.models import Offer
from tests.inference.conftest import MODEL, engine  # noqa: F401 (a fixture)
from tests.lightningd import LightningdDouble
from tests.sharing.strangers import (
    PRICE_MSAT,
    asked,
    bought,
    on_sale,  # noqa: F401 (a fixture)
    payer,  # noqa: F401 (a fixture)
    seller_node,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.django_db(transaction=True)


def checks_out(event: dict[str, Any]) -> bool:
    """NIP-01: the id is the sha256 of the serialised event; the signature is BIP-340 by the
    pubkey over the id."""
    serialised = json.dumps(
        [0, event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"]],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(serialised.encode()).digest()
    if digest.hex() != event["id"]:
        return False
    key = PublicKeyXOnly(bytes.fromhex(event["pubkey"]))
    return bool(key.verify(bytes.fromhex(event["sig"]), digest))


def test_a_receipt_is_signed_by_the_node_s_key_and_altering_it_breaks_it() -> None:
    content = receipts.ReceiptContent(
        payment_hash="ab" * 32,
        amount_msat=21_000,
        model="tiny",
        model_sha256="cd" * 32,
        usage=receipts.Usage(prompt_tokens=3, completion_tokens=5),
        balance_msat=0,
    )
    event = receipts.receipt_signed(content)

    assert checks_out(event)
    assert event["pubkey"] == identity.node_keys().public_key().to_hex()
    assert json.loads(event["content"]) == content
    altered = {**event, "content": event["content"].replace("21000", "1")}
    assert not checks_out(altered)


def test_a_streamed_answer_ends_with_its_receipt(
    live_server: Any,
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
) -> None:
    token = bought(str(live_server.url), payer)

    body = streamed(asked(stream=True), token.authorization)

    chunks = [
        json.loads(line.removeprefix(b"data: "))
        for line in body.split(b"\n\n")
        if line.startswith(b"data: {")
    ]
    [shown] = [chunk["sovereign"] for chunk in chunks if "sovereign" in chunk]
    receipt = shown["receipt"]
    assert checks_out(receipt)
    content = json.loads(receipt["content"])
    assert content["payment_hash"] == token.payment_hash
    assert (content["amount_msat"], content["model"]) == (PRICE_MSAT, MODEL)
    assert content["model_sha256"] == "a" * 64  # the catalog's sha256 of the file that answered
    assert content["usage"]["completion_tokens"] > 0


def streamed(body: dict[str, Any], authorization: str) -> bytes:
    """A streamed answer read as an ASGI server serves it (the live server is WSGI, which
    cannot carry an answer's stream across event loops)."""

    async def read() -> bytes:
        response = await AsyncClient().post(
            "/v1/chat/completions",
            data=body,
            content_type="application/json",
            headers={"Authorization": authorization},
        )
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()
