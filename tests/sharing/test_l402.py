"""Strangers pay per request with L402: a live server of this node, the real engine on the
bundled model, the household's lightningd double as the seller's node and a second one as the
stranger's; the stranger's client is written in tests/sharing/strangers.py from the rules."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference.models import ChatMessage
from apps.sharing import macaroons
from apps.sharing.models import Balance, Offer, Sale
from apps.wallet.models import Invoice
from tests.inference.conftest import MODEL, engine  # noqa: F401 (a fixture)
from tests.lightningd import LightningdDouble
from tests.providers.doubles import macaroons as test_macaroons
from tests.sharing.strangers import (
    PRICE_MSAT,
    Token,
    asked,
    bought,
    get,
    l402_token,
    on_sale,  # noqa: F401 (a fixture)
    paid,
    payer,  # noqa: F401 (a fixture)
    post,
    receipt_of_header,
    seller_node,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def url(live_server: Any, on_sale: Offer) -> str:  # noqa: F811
    return str(live_server.url)


def test_no_credential_gets_402_with_lsat_first_then_l402_then_mpp(
    url: str,
    seller_node: LightningdDouble,  # noqa: F811
) -> None:
    reply = post(url, asked())

    assert reply.status == 402
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.json()["status"] == 402 and reply.json()["price_msat"] == token_msat()
    schemes = [scheme for scheme, _ in reply.challenges()]
    assert schemes == ["LSAT", "L402", "Payment"]
    [lsat, l402, mpp] = [params for _, params in reply.challenges()]
    assert lsat == l402 and set(l402) == {"macaroon", "invoice"}
    assert {"id", "realm", "method", "intent", "request", "expires"} <= set(mpp)
    # The invoice is the household node's own, for the price, saying what is sold.
    [invoice] = [
        i for i in seller_node.rpc.listinvoices()["invoices"] if i["bolt11"] == l402["invoice"]
    ]
    # An L402 token is a prepaid balance of SHARING_TOKEN_REQUESTS answers at their most; an
    # MPP charge pays for one.
    assert invoice["amount_msat"] == token_msat() and MODEL in invoice["description"]
    charged = json.loads(base64.urlsafe_b64decode(mpp["request"] + "=="))
    assert (charged["amount"], charged["currency"]) == (str(PRICE_MSAT // 1000), "sat")
    assert Invoice.objects.get(bolt11=l402["invoice"]).caller == "sharing"


def test_the_macaroon_is_bound_to_its_invoice_and_verifies_with_the_root_key(url: str) -> None:
    token = l402_token(post(url, asked()))

    parsed = test_macaroons.parse(test_macaroons.b64decode_any(token.macaroon))
    root = bytes.fromhex((settings.DATA_DIR / macaroons.ROOT_KEY_FILE).read_text())
    assert test_macaroons.verified(root, parsed)  # the tests' own implementation agrees
    caveats = [c.decode() for c in parsed.caveats]
    assert caveats[0] == "services=sovereign:0" and caveats[1].startswith("sovereign_valid_until=")
    balance = Balance.objects.get(token_id=parsed.token_id)
    assert (balance.kind, balance.balance_msat) == ("l402", 0)
    mode = os.stat(settings.DATA_DIR / macaroons.ROOT_KEY_FILE).st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_stranger_pays_once_gets_answers_with_receipts_until_the_token_is_spent(
    url: str,
    payer: LightningdDouble,  # noqa: F811
) -> None:
    token = bought(url, payer)

    first = post(url, asked(), token.authorization)
    second = post(url, asked(), token.authorization)

    assert first.status == 200, first.body
    answer = first.json()
    assert answer["choices"][0]["message"]["content"]
    shown = answer["sovereign"]
    assert shown["cost_msat"] == PRICE_MSAT and shown["balance_msat"] == token_msat() - PRICE_MSAT
    receipt = shown["receipt"]
    assert receipt == receipt_of_header(first)
    content = json.loads(receipt["content"])
    assert content["payment_hash"] == token.payment_hash
    assert (content["amount_msat"], content["model"]) == (PRICE_MSAT, MODEL)
    assert content["usage"]["completion_tokens"] == answer["usage"]["completion_tokens"]
    assert content["balance_msat"] == token_msat() - PRICE_MSAT
    # The kept token answers again, paid from its balance: one payment, two answers.
    assert second.status == 200, second.body
    assert second.json()["sovereign"]["balance_msat"] == token_msat() - 2 * PRICE_MSAT
    assert len(payer.rpc.listpays()["pays"]) == 1 and Sale.objects.count() == 2
    # Nothing of the stranger's is kept among the household's conversations, nor in the log.
    assert not ChatMessage.objects.exists()
    assert "capital" not in "".join(AuditEvent.objects.values_list("detail", flat=True))

    # Spent (less than one answer left): a new 402, offering to fill this token back up.
    Balance.objects.filter(token_id=_token_id(token)).update(balance_msat=PRICE_MSAT - 1)
    spent = post(url, asked(), token.authorization)
    assert spent.status == 402 and "needs up to" in spent.json()["detail"]
    topup = l402_token(spent)
    assert _token_id(topup) == _token_id(token) and topup.payment_hash != token.payment_hash
    assert payer.rpc.decode(topup.invoice)["amount_msat"] == token_msat() - PRICE_MSAT + 1


def test_a_metered_token_pays_for_several_answers_then_is_topped_up_by_what_it_lacks(
    url: str,
    payer: LightningdDouble,  # noqa: F811
    seller_node: LightningdDouble,  # noqa: F811
    on_sale: Offer,  # noqa: F811
    settings: Any,
) -> None:
    Offer.objects.filter(pk=on_sale.pk).update(
        per_1k_tokens=True, price_msat=1_000, max_request_msat=PRICE_MSAT
    )
    reserved = settings.ENGINE_CONTEXT_PER_SLOT  # 1 msat a token, a slot's context at most
    token = bought(url, payer)
    costs = []
    for _ in range(3):  # one payment, a kept token, three answers
        reply = post(url, asked(), token.authorization)
        assert reply.status == 200, reply.body
        usage = reply.json()["usage"]
        costs.append(reply.json()["sovereign"]["cost_msat"])
        assert costs[-1] == usage["prompt_tokens"] + usage["completion_tokens"]
    balance = Balance.objects.get(token_id=_token_id(token))
    assert balance.balance_msat == token_msat() - sum(costs)
    assert len(payer.rpc.listpays()["pays"]) == 1

    # What is left cannot pay the next answer's most: a top-up of this very token back to a
    # full one, never a new token that would strand the rest.
    Balance.objects.filter(pk=balance.pk).update(balance_msat=reserved - 100)
    short = post(url, asked(), token.authorization)
    assert short.status == 402 and "needs up to" in short.json()["detail"]
    topup = l402_token(short)
    assert _token_id(topup) == _token_id(token)
    assert payer.rpc.decode(topup.invoice)["amount_msat"] == token_msat() - reserved + 100
    paid(topup, payer)

    again = post(url, asked(), topup.authorization)
    assert again.status == 200, again.body
    assert Balance.objects.get(pk=balance.pk).balance_msat == (
        token_msat() - again.json()["sovereign"]["cost_msat"]
    )


def test_a_forged_macaroon_is_refused(url: str, payer: LightningdDouble) -> None:  # noqa: F811
    token = bought(url, payer)
    parsed = test_macaroons.parse(test_macaroons.b64decode_any(token.macaroon))
    forged = test_macaroons.mint(b"\x00" * 32, parsed.identifier, parsed.location, parsed.caveats)
    token.macaroon = base64.b64encode(forged).decode()

    reply = post(url, asked(), token.authorization)

    assert reply.status == 402 and "signature" in reply.json()["detail"]
    assert Sale.objects.count() == 0


def test_a_caveat_added_by_the_holder_is_refused(
    url: str,
    payer: LightningdDouble,  # noqa: F811
) -> None:
    """A holder may add caveats (the chain allows it): unknown ones narrow nothing here, so
    they are refused rather than ignored."""
    token = bought(url, payer)
    parsed = test_macaroons.parse(test_macaroons.b64decode_any(token.macaroon))
    root = bytes.fromhex((settings.DATA_DIR / macaroons.ROOT_KEY_FILE).read_text())
    caveats = (*parsed.caveats, b"tier=gold")
    extended = test_macaroons.mint(root, parsed.identifier, parsed.location, caveats)
    token.macaroon = base64.b64encode(extended).decode()

    reply = post(url, asked(), token.authorization)

    assert reply.status == 402 and "caveat" in reply.json()["detail"]


def test_a_token_whose_invoice_is_unpaid_is_refused(url: str) -> None:
    token = l402_token(post(url, asked()))
    # A preimage that does hash to the invoice's payment hash cannot be had without paying:
    # the node's record is what decides. Here the client guesses.
    token.preimage = "ab" * 32

    reply = post(url, asked(), token.authorization)
    assert reply.status == 402 and "preimage" in reply.json()["detail"]


def test_an_unpaid_invoice_is_refused_even_with_its_preimage(
    url: str,
    seller_node: LightningdDouble,  # noqa: F811
) -> None:
    """Someone holding the preimage (the node's own invoice, read from its records) but not
    having paid: the node's listinvoices says unpaid, so no answer."""
    token = l402_token(post(url, asked()))
    invoice = Invoice.objects.get(payment_hash=token.payment_hash)
    [found] = seller_node.rpc.listinvoices(label=invoice.label)["invoices"]
    assert found["status"] == "unpaid"
    token.preimage = _preimage_known_to_the_node(seller_node, invoice.label)

    reply = post(url, asked(), token.authorization)

    assert reply.status == 402 and "not paid" in reply.json()["detail"]
    assert Balance.objects.get(token_id=_token_id(token)).balance_msat == 0


def test_a_preimage_of_one_token_replayed_with_another_is_refused(
    url: str,
    payer: LightningdDouble,  # noqa: F811
) -> None:
    paid_token = bought(url, payer)
    other = l402_token(post(url, asked()))
    other.preimage = paid_token.preimage

    reply = post(url, asked(), other.authorization)

    assert reply.status == 402 and "preimage" in reply.json()["detail"]
    assert Balance.objects.get(token_id=_token_id(other)).balance_msat == 0


def test_an_expired_token_is_refused(url: str, payer: LightningdDouble) -> None:  # noqa: F811
    token = bought(url, payer)
    parsed = test_macaroons.parse(test_macaroons.b64decode_any(token.macaroon))
    # Minted by the node (its root key) with a validity already past.
    expired = macaroons.mint(parsed.payment_hash, parsed.token_id, 1_000_000_000)
    token.macaroon = base64.b64encode(expired).decode()

    reply = post(url, asked(), token.authorization)
    assert reply.status == 402 and "expired" in reply.json()["detail"]

    # And a token whose balance has expired, though its macaroon is still good: new 402, with
    # a fresh token, never a top-up of the expired balance. (Shown once first: crediting its
    # payment renews it, so it is expired only after that.)
    fresh = bought(url, payer)
    assert post(url, asked(), fresh.authorization).status == 200
    Balance.objects.filter(token_id=_token_id(fresh)).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    refused = post(url, asked(), fresh.authorization)
    assert refused.status == 402
    assert _token_id(l402_token(refused)) != _token_id(fresh)


def test_a_node_that_does_not_answer_gets_503_not_a_new_invoice(
    url: str,
    payer: LightningdDouble,  # noqa: F811
    seller_node: LightningdDouble,  # noqa: F811
) -> None:
    token = bought(url, payer)
    seller_node.faults.next_call("listinvoices", "drop")
    invoices = Invoice.objects.count()

    reply = post(url, asked(), token.authorization)

    assert reply.status == 503 and reply.headers["Retry-After"]
    assert Invoice.objects.count() == invoices
    assert post(url, asked(), token.authorization).status == 200


def _short_then_topped_up(url: str, token: Token, payer: LightningdDouble) -> Token:  # noqa: F811
    """The token's balance made too short for an answer; the top-up offered, paid."""
    Balance.objects.filter(token_id=_token_id(token)).update(balance_msat=1)
    short = post(url, asked(), token.authorization)
    assert short.status == 402 and "needs up to" in short.json()["detail"]
    topup = l402_token(short)
    assert _token_id(topup) == _token_id(token)
    return paid(topup, payer)


def test_a_node_silent_about_a_paid_top_up_gets_503_never_new_invoices(
    url: str,
    payer: LightningdDouble,  # noqa: F811
    seller_node: LightningdDouble,  # noqa: F811
) -> None:
    token = bought(url, payer)
    assert post(url, asked(), token.authorization).status == 200  # its first invoice credited
    topup = _short_then_topped_up(url, token, payer)
    seller_node.faults.next_call("listinvoices", "drop")
    invoices = Invoice.objects.count()

    reply = post(url, asked(), topup.authorization)

    # The top-up's own state is unknown: wait, never a 402 that would have it paid twice.
    assert reply.status == 503 and reply.headers["Retry-After"], reply.body
    assert Invoice.objects.count() == invoices
    assert post(url, asked(), topup.authorization).status == 200


def test_a_paid_top_up_renews_the_token_and_its_macaroon_lasts_as_long(
    url: str,
    payer: LightningdDouble,  # noqa: F811
) -> None:
    token = bought(url, payer)
    assert post(url, asked(), token.authorization).status == 200
    balance = Balance.objects.get(token_id=_token_id(token))
    Balance.objects.filter(pk=balance.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    topup = _short_then_topped_up(url, token, payer)

    assert post(url, asked(), topup.authorization).status == 200

    balance.refresh_from_db()
    days = timedelta(days=settings.SHARING_TOKEN_DAYS)
    assert balance.expires_at > timezone.now() + days - timedelta(minutes=5)
    caveats = test_macaroons.parse(test_macaroons.b64decode_any(topup.macaroon)).caveats
    [until] = [int(c.split(b"=")[1]) for c in caveats if b"valid_until" in c]
    assert until >= balance.expires_at.timestamp()  # the caveat never refuses the renewed balance


def test_lsat_credentials_are_taken_as_l402(url: str, payer: LightningdDouble) -> None:  # noqa: F811
    token = bought(url, payer)
    token.scheme = "LSAT"
    assert post(url, asked(), token.authorization).status == 200


def test_strangers_see_the_models_on_sale_and_the_manifest(url: str) -> None:
    listed = get(url, "/v1/models")
    manifest = get(url, "/.well-known/l402.json")

    assert listed.status == 200
    [entry] = listed.json()["data"]
    assert entry["id"] == MODEL and entry["sovereign"]["price_msat"] == PRICE_MSAT
    assert entry["sats_pricing"]["request"] == PRICE_MSAT / 1000
    from apps.providers.backends.l402 import manifest_read

    assert entry["sovereign"]["token_msat"] == token_msat()
    assert manifest_read(manifest.json()) == {MODEL: token_msat()}


def test_a_model_not_on_sale_keeps_the_household_s_401(url: str) -> None:
    reply = post(url, {**asked(), "model": "not-for-sale"})
    assert reply.status == 401


def test_a_request_too_large_is_refused_before_anything(url: str) -> None:
    big = {**asked(), "messages": [{"role": "user", "content": "x" * 70_000}]}
    invoices = Invoice.objects.count()

    assert post(url, big).status == 413
    assert Invoice.objects.count() == invoices


def test_too_many_requests_from_one_address_get_429(url: str, settings: Any) -> None:
    settings.SHARING_REQUESTS_PER_MINUTE = 2
    statuses = [post(url, asked()).status for _ in range(3)]

    assert statuses == [402, 402, 429]
    assert AuditEvent.objects.filter(action="sharing_limited").count() == 1
    assert AuditEvent.objects.filter(action="sale_challenged").count() == 2


def token_msat() -> int:
    """What a fresh L402 token's invoice asks: SHARING_TOKEN_REQUESTS answers at their most."""
    return int(PRICE_MSAT * settings.SHARING_TOKEN_REQUESTS)


def _token_id(token: Token) -> str:
    parsed = test_macaroons.parse(test_macaroons.b64decode_any(token.macaroon))
    return parsed.token_id


def _preimage_known_to_the_node(node: LightningdDouble, label: str) -> str:
    """The preimage the seller's node holds for an unpaid invoice (read from the double's own
    state, as only the node could), which hashes to the payment hash."""
    [invoice] = [i for i in node.node.state.invoices if i.label == label]
    return invoice.preimage
