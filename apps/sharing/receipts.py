"""Receipts for sold answers: a Nostr event signed with the node's key, checkable by anyone.

The event (kind `RECEIPT_KIND`, never published: it travels only with the answer) has as content
the JSON `{payment_hash, amount_msat, model, model_sha256, usage, balance_msat}`: the payment
that opened the buyer's balance, what this answer cost, the model and the sha256 of the file that
answered, the tokens it used, and what the balance holds after it. Anyone checks it as any Nostr
event (the id is the sha256 of its serialisation, the signature a BIP-340 Schnorr signature by
the node's public key, the npub the node announces).

It rides in the answer's `sovereign.receipt` and, for a whole answer, in the header
`X-Sovereign-Receipt` (base64 of the event's JSON).
"""

from __future__ import annotations

import base64
import json
from typing import Any, TypedDict

from nostr_sdk import EventBuilder, Kind, Tag

from apps.identity import services as identity
from apps.inference.models import LocalModel

# A regular kind (1000-9999) that no NIP uses: receipts are not meant for relays.
RECEIPT_KIND = 8402
HEADER = "X-Sovereign-Receipt"


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


class ReceiptContent(TypedDict):
    payment_hash: str
    amount_msat: int
    model: str
    model_sha256: str
    usage: Usage
    balance_msat: int


def receipt_signed(content: ReceiptContent) -> dict[str, Any]:
    """The signed event, as JSON a client can check."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    tags = [Tag.parse(["x", content["payment_hash"]]), Tag.parse(["model", content["model"]])]
    event = EventBuilder(Kind(RECEIPT_KIND), text).tags(tags).finalize(identity.node_keys())
    signed: dict[str, Any] = json.loads(event.as_json())
    return signed


def sale_receipt(
    payment_hash: str, cost_msat: int, model: str, usage: Usage, balance_msat: int
) -> dict[str, Any]:
    sha256 = LocalModel.objects.filter(name=model).values_list("sha256", flat=True).first()
    return receipt_signed(
        ReceiptContent(
            payment_hash=payment_hash,
            amount_msat=cost_msat,
            model=model,
            model_sha256=sha256 or "",
            usage=usage,
            balance_msat=balance_msat,
        )
    )


def receipt_header(event: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(event, separators=(",", ":")).encode()).decode()
