"""The one guard in front of strangers (guard.py), the one shaping of a sold answer
(shaping.py), and what strangers' unpaid requests may leave behind.

Real parts, as in test_routstr.py: the household's lightningd double and a second one paying
as the stranger, the real engine on the bundled model, Django's client in this process.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from apps.audit.models import AuditEvent
from apps.audit.services import action_label
from apps.sharing import balances, guard, keys, receipts, stranger, tasks
from apps.sharing.models import Balance, Credit, Offer, Sale
from apps.wallet.models import Invoice
from tests.inference.conftest import MODEL, RecordingDecoder
from tests.lightningd import LightningdDouble
from tests.sharing.test_routstr import (  # noqa: F401 (fixtures)
    PRICE_MSAT,
    QUESTION,
    balance_msat,
    chat,
    engine,
    invoice_made,
    key_bought,
    on_sale,
    payer,
    post,
    seller_node,
)
from tests.sharing.test_routstr import (
    stranger as client_of,
)

pytestmark = pytest.mark.django_db
LSAT = re.compile(r'LSAT macaroon="([^"]+)", invoice="([^"]+)"')


def asked_paid(authorization: str = "", stream: bool = False, **meta: str) -> Any:
    """A stranger's chat paid with L402 (or with no credential: a 402)."""
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0,
            "stream": stream}  # fmt: skip
    return client_of().post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        **extra,
        **meta,
    )


def lsat_of(reply: Any) -> tuple[str, str]:
    assert reply.status_code == 402, reply.content
    found = LSAT.fullmatch(reply["WWW-Authenticate"])
    assert found is not None
    return found.group(1), found.group(2)


def token_bought(payer: LightningdDouble) -> str:  # noqa: F811
    macaroon, bolt11 = lsat_of(asked_paid())
    preimage = payer.rpc.xpay(bolt11)["payment_preimage"]
    return f"L402 {macaroon}:{preimage}"


# The limit per address -------------------------------------------------------------------


def test_an_ipv6_client_is_counted_by_its_64_and_an_ipv4_one_by_its_address() -> None:
    assert guard.address_key("2001:db8:1:2::a") == "2001:db8:1:2::/64"
    assert guard.address_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert guard.address_key("2001:db8:1:3::a") == "2001:db8:1:3::/64"
    assert guard.address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert guard.address_key("192.0.2.7") == "192.0.2.7"


def test_the_limit_holds_for_a_whole_ipv6_64_on_every_stranger_endpoint(
    on_sale: Offer,  # noqa: F811
    settings: Any,
) -> None:
    settings.SHARING_REQUESTS_PER_MINUTE = 2
    first = client_of().get("/v1/info", REMOTE_ADDR="2001:db8:1:2::a")
    second = asked_paid(REMOTE_ADDR="2001:db8:1:2::b")  # the paid chat: the same count
    third = client_of().get("/v1/info", REMOTE_ADDR="2001:db8:1:2::c")
    chat_refused = asked_paid(REMOTE_ADDR="2001:db8:1:2::d")
    elsewhere = client_of().get("/v1/info", REMOTE_ADDR="2001:db8:1:3::a")

    assert (first.status_code, second.status_code, elsewhere.status_code) == (200, 402, 200)
    assert third.status_code == chat_refused.status_code == 429
    assert third["Retry-After"] == chat_refused["Retry-After"] == "60"
    assert chat_refused.json()["error"]["code"] == "rate_limit_exceeded"
    # One action, one row for the /64 within the minute, labelled once.
    [row] = AuditEvent.objects.filter(action=guard.LIMITED)
    assert row.actor == "stranger 2001:db8:1:2::/64"
    assert not AuditEvent.objects.filter(action="sale_rate_limited").exists()
    assert action_label(guard.LIMITED) == "Stranger over the request limit"
    assert action_label(stranger.Action.ANSWERED) == "An answer was sold"


def test_refused_credentials_write_one_row_a_minute_per_address(on_sale: Offer) -> None:  # noqa: F811
    replies = [asked_paid("L402 nonsense:" + "0" * 64) for _ in range(3)]

    assert [reply.status_code for reply in replies] == [402, 402, 402]
    assert AuditEvent.objects.filter(action=stranger.Action.REFUSED).count() == 1


def test_a_body_too_large_is_413_on_every_path(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
    settings: Any,
) -> None:
    key = key_bought(payer, 10)
    settings.SHARING_MAX_REQUEST_BYTES = 512
    big = [{"role": "user", "content": "x" * 1000}]
    invoices = Invoice.objects.count()

    unpaid = client_of().post(
        "/v1/chat/completions",
        json.dumps({"model": MODEL, "messages": big}),
        content_type="application/json",
    )
    with_key = chat(key, messages=big)
    for_a_key = post(client_of(), "/lightning/invoice", {"amount_sats": 5, "pad": "x" * 1000})

    assert unpaid.status_code == with_key.status_code == for_a_key.status_code == 413
    assert unpaid.json()["error"]["code"] == with_key.json()["error"]["code"]
    assert "512 bytes" in for_a_key.json()["detail"]
    assert Invoice.objects.count() == invoices


# Unpaid invoices, bounded ----------------------------------------------------------------


def test_an_address_is_given_at_most_five_unpaid_offers_then_429(
    on_sale: Offer,  # noqa: F811
    seller_node: LightningdDouble,  # noqa: F811
) -> None:
    offered = [asked_paid().status_code for _ in range(3)]
    offered += [post(client_of(), "/lightning/invoice", {"amount_sats": 5}).status_code] * 1
    offered.append(asked_paid().status_code)
    invoices = len(seller_node.rpc.listinvoices()["invoices"])

    capped = asked_paid()
    key_capped = post(client_of(), "/lightning/invoice", {"amount_sats": 5})
    elsewhere = asked_paid(REMOTE_ADDR="192.0.2.9")

    assert offered == [402, 402, 402, 200, 402]
    assert capped.status_code == key_capped.status_code == 429
    assert "5 invoices" in capped.json()["error"]["message"]
    assert "5 invoices" in key_capped.json()["detail"]
    assert elsewhere.status_code == 402
    assert len(seller_node.rpc.listinvoices()["invoices"]) == invoices + 2  # elsewhere's only
    assert AuditEvent.objects.filter(action=guard.CAPPED).count() == 1  # folded: one a minute


def test_the_node_as_a_whole_holds_at_most_so_many_unpaid_invoices(
    on_sale: Offer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard, "UNPAID_OVERALL", 3)
    assert asked_paid(REMOTE_ADDR="192.0.2.1").status_code == 402  # an L402 and an MPP invoice
    assert asked_paid(REMOTE_ADDR="192.0.2.2").status_code == 402  # four unpaid now

    refused = asked_paid(REMOTE_ADDR="192.0.2.3")

    assert refused.status_code == 503 and refused["Retry-After"] == "60"
    assert Invoice.objects.count() == 4


def test_a_short_l402_token_is_offered_the_same_top_up_again(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
) -> None:
    authorization = token_bought(payer)
    balance = Balance.objects.get(kind=Balance.Kind.L402, credits__invoice__state="unpaid")
    assert balances.balance_credited(balance) == balances.Paid.YES
    Balance.objects.filter(pk=balance.pk).update(balance_msat=PRICE_MSAT - 1)

    # More often than the address's cap of fresh offers: a paid balance's top-up is not one.
    topups = {lsat_of(asked_paid(authorization))[1] for _ in range(guard.OFFERS_PER_ADDRESS + 1)}

    assert len(topups) == 1
    assert Credit.objects.filter(balance=balance).count() == 2  # its first, one top-up


def test_a_key_asking_the_same_top_up_again_gets_the_same_invoice(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
) -> None:
    key = key_bought(payer, 10)

    first, again, other = invoice_made(5, key), invoice_made(5, key), invoice_made(7, key)
    payer.rpc.xpay(first["bolt11"])
    after_paying = invoice_made(5, key)

    assert first["bolt11"] == again["bolt11"] and other["bolt11"] != first["bolt11"]
    assert after_paying["bolt11"] != first["bolt11"]  # that one is paid: a new one
    assert balance_msat(key) == 15_000


def test_balances_whose_only_invoice_expired_unpaid_are_pruned(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
) -> None:
    key = key_bought(payer, 10)
    invoice_made(5, key)  # a top-up of a paid key, left unpaid
    asked_paid()  # an L402 and an MPP balance, never paid
    invoice_made(5)  # a key never paid
    Invoice.objects.filter(state=Invoice.State.UNPAID).update(state=Invoice.State.EXPIRED)
    invoices = Invoice.objects.count()

    tasks.unpaid_balances_prune()

    [kept] = Balance.objects.all()
    assert kept.token_id == keys.token_id_of(key) and kept.credits.count() == 2
    assert Invoice.objects.count() == invoices == 5
    assert balance_msat(key) == 10_000


def test_the_prune_is_scheduled(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["sharing-unpaid-prune"]
    assert entry["task"] == "sharing.unpaid_balances_prune"


# One shaping of a sold answer ------------------------------------------------------------


def test_a_whole_answer_carries_the_receipt_and_the_cost_whatever_paid_it(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
    engine: RecordingDecoder,  # noqa: F811
) -> None:
    by_key = chat(key_bought(payer, 10))
    by_token = asked_paid(token_bought(payer))

    for answered in (by_key, by_token):
        assert answered.status_code == 200, answered.content
        shown = answered.json()["sovereign"]
        assert answered["X-Routstr-Cost-Msats"] == str(PRICE_MSAT) == str(shown["cost_msat"])
        assert answered[receipts.HEADER] == receipts.receipt_header(shown["receipt"])


@pytest.mark.django_db(transaction=True)
def test_a_streamed_answer_carries_them_in_its_last_chunk_not_in_headers(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
    engine: RecordingDecoder,  # noqa: F811
) -> None:
    by_key = f"Bearer {key_bought(payer, 10)}"
    by_token = token_bought(payer)

    for authorization in (by_key, by_token):
        headers, events = streamed(authorization)
        assert "X-Routstr-Cost-Msats" not in headers and receipts.HEADER not in headers
        chunks = [json.loads(e[6:]) for e in events.split("\n\n") if e.startswith("data: {")]
        last = chunks[-1]["sovereign"]
        assert last["cost_msat"] == PRICE_MSAT
        assert json.loads(last["receipt"]["content"])["amount_msat"] == PRICE_MSAT


def streamed(authorization: str) -> tuple[dict[str, str], str]:
    """Read as an ASGI server serves it (test_receipts.streamed says why not the live server)."""
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0,
            "stream": True}  # fmt: skip

    async def read() -> tuple[dict[str, str], str]:
        response = await AsyncClient().post(
            "/v1/chat/completions",
            data=body,
            content_type="application/json",
            headers={"Authorization": authorization},
        )
        assert response.status_code == 200
        content = b"".join([chunk async for chunk in response.streaming_content])
        return dict(response.items()), content.decode()

    return async_to_sync(read)()


# A failure between the sale and its response ---------------------------------------------


def test_an_audit_that_fails_gives_the_key_its_reservation_back(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
    engine: RecordingDecoder,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = key_bought(payer, 10)

    def audit_broken(balance: Balance, model: str) -> None:
        raise RuntimeError("the audit trail is down")

    monkeypatch.setattr(keys, "answer_audited", audit_broken)
    failed = chat(key)
    monkeypatch.undo()

    assert failed.status_code == 500
    assert balance_msat(key) == 10_000 and not Sale.objects.exists()
    assert chat(key).status_code == 200  # the engine's slot was freed


def test_an_audit_that_fails_gives_the_token_its_reservation_back(
    on_sale: Offer,  # noqa: F811
    payer: LightningdDouble,  # noqa: F811
    engine: RecordingDecoder,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    authorization = token_bought(payer)
    audited = stranger._audited

    def answer_audit_broken(action: str, address: str, detail: str) -> None:
        if action == stranger.Action.ANSWERED:
            raise RuntimeError("the audit trail is down")
        audited(action, address, detail)

    monkeypatch.setattr(stranger, "_audited", answer_audit_broken)
    failed = asked_paid(authorization)
    monkeypatch.undo()

    balance = Balance.objects.get(kind=Balance.Kind.L402, credits__credited_at__isnull=False)
    assert failed.status_code == 500
    assert balances.balance_now(balance) == PRICE_MSAT * 10 and not Sale.objects.exists()
    assert asked_paid(authorization).status_code == 200
