"""Strangers pay per request with MPP (the "Payment" scheme, Lightning `charge` intent), with a
client written here from the draft (lightning.md §1.5A): echo every parameter unchanged, with
the preimage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from django.conf import settings

from apps.sharing.models import Balance, Offer, Sale
from tests.inference.conftest import engine  # noqa: F401 (a fixture)
from tests.lightningd import LightningdDouble
from tests.sharing.strangers import (
    PRICE_MSAT,
    Reply,
    asked,
    on_sale,  # noqa: F401 (a fixture)
    payer,  # noqa: F401 (a fixture)
    post,
    seller_node,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.django_db(transaction=True)
ID_FIELDS = ("realm", "method", "intent", "request", "expires", "digest", "opaque")


@pytest.fixture
def url(live_server: Any, on_sale: Offer) -> str:  # noqa: F811
    return str(live_server.url)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url_decoded(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def charge(reply: Reply) -> dict[str, str]:
    assert reply.status == 402, reply.body
    [params] = [p for scheme, p in reply.challenges() if scheme == "Payment"]
    assert (params["method"], params["intent"]) == ("lightning", "charge")
    return params


def credential(params: dict[str, str], preimage: str) -> str:
    answer = {"challenge": params, "payload": {"preimage": preimage}}
    return "Payment " + b64url(json.dumps(answer).encode())


def paid_charge(url: str, payer: LightningdDouble) -> tuple[dict[str, str], str]:  # noqa: F811
    params = charge(post(url, asked()))
    request = json.loads(b64url_decoded(params["request"]))
    invoice = request["methodDetails"]["invoice"]
    decoded = payer.rpc.decode(invoice)
    # The request and the invoice agree, and ask the price: then, and only then, pay.
    assert decoded["payment_hash"] == request["methodDetails"]["paymentHash"]
    # As the draft's example (`{"amount":"14","currency":"sat"}`): whole sats as a string.
    assert decoded["amount_msat"] == int(request["amount"]) * 1000 == PRICE_MSAT
    assert request["currency"] == "sat" and isinstance(request["amount"], str)
    return params, payer.rpc.xpay(invoice)["payment_preimage"]


def test_the_challenge_id_is_an_hmac_over_its_parameters(url: str) -> None:
    params = charge(post(url, asked()))

    assert json.loads(b64url_decoded(params["request"]))  # base64url of JSON
    decoded = b64url_decoded(params["request"]).decode()
    assert decoded == json.dumps(json.loads(decoded), sort_keys=True, separators=(",", ":"))
    # Recomputed with the key derived from the root key, as the node says it makes it.
    root = bytes.fromhex((settings.DATA_DIR / "l402_root_key").read_text())
    key = hmac.new(root, b"mpp-challenge-id", hashlib.sha256).digest()
    joined = "|".join(params.get(name, "") for name in ID_FIELDS)
    assert params["id"] == b64url(hmac.new(key, joined.encode(), hashlib.sha256).digest())


def test_a_paid_charge_gets_the_answer_a_payment_receipt_and_a_signed_receipt(
    url: str,
    payer: LightningdDouble,  # noqa: F811
) -> None:
    params, preimage = paid_charge(url, payer)

    reply = post(url, asked(), credential(params, preimage))

    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["choices"][0]["message"]["content"]
    payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
    receipt = json.loads(b64url_decoded(reply.headers["Payment-Receipt"]))
    assert (receipt["status"], receipt["reference"]) == ("success", payment_hash)
    assert receipt["challengeId"] == params["id"]  # the challenge this charge paid (the draft)
    content = json.loads(body["sovereign"]["receipt"]["content"])
    assert (content["payment_hash"], content["amount_msat"]) == (payment_hash, PRICE_MSAT)
    assert Balance.objects.get(kind="mpp", sales__isnull=False).balance_msat == 0


def test_a_charge_answers_once_then_a_new_402(url: str, payer: LightningdDouble) -> None:  # noqa: F811
    params, preimage = paid_charge(url, payer)
    assert post(url, asked(), credential(params, preimage)).status == 200

    again = post(url, asked(), credential(params, preimage))

    assert again.status == 402 and "needs up to" in again.json()["detail"]
    assert Sale.objects.count() == 1


def test_a_changed_parameter_is_refused(url: str, payer: LightningdDouble) -> None:  # noqa: F811
    params, preimage = paid_charge(url, payer)
    other = charge(post(url, asked()))  # another charge's balance, unpaid
    tampered = {**params, "opaque": other["opaque"]}

    reply = post(url, asked(), credential(tampered, preimage))

    assert reply.status == 402 and "not one this node issued" in reply.json()["detail"]
    assert Sale.objects.count() == 0


def test_an_unpaid_charge_with_a_guessed_preimage_is_refused(url: str) -> None:
    params = charge(post(url, asked()))

    reply = post(url, asked(), credential(params, "cd" * 32))

    assert reply.status == 402 and "preimage" in reply.json()["detail"]


def test_an_unreadable_credential_gets_a_fresh_challenge(url: str) -> None:
    reply = post(url, asked(), "Payment not-base64-json")

    assert reply.status == 402 and "unreadable" in reply.json()["detail"]
    assert charge(reply)["id"]


def test_a_metered_charge_asks_what_one_answer_reserves(
    url: str,
    on_sale: Offer,  # noqa: F811
) -> None:
    Offer.objects.filter(pk=on_sale.pk).update(
        per_1k_tokens=True, price_msat=500, max_request_msat=PRICE_MSAT
    )
    params = charge(post(url, asked()))

    request = json.loads(b64url_decoded(params["request"]))
    # What one answer reserves (a slot's context at 0.5 msat a token), in whole sats rounded
    # up, as the draft states amounts: the fraction of a sat stays in the balance.
    reserved = settings.ENGINE_CONTEXT_PER_SLOT // 2
    assert int(request["amount"]) == -(-reserved // 1000) < PRICE_MSAT // 1000
    assert request["currency"] == "sat"
