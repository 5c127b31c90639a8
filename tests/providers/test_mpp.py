"""MPP providers (the "Payment" scheme, Lightning charge): every request pays its own invoice,
answers with every challenge parameter unchanged and the preimage, and keeps the receipt; a
request whose amount or invoice disagrees with the price shown is refused, nothing paid."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from apps.inference.backends.base import Done, Failed, RefusalCode
from apps.providers import services
from apps.providers.models import Credential, OutsideRequest, ProviderModel
from apps.wallet import budgets
from apps.wallet import services as wallet
from apps.wallet.models import Payment
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.mpp import MPPDouble
from tests.providers.paid import ask, ask_whole, payments

PRICE = 15_000
MODEL = "paymentauth/strong-1"


@pytest.fixture
def mpp(provider_node: LightningdDouble) -> Iterator[MPPDouble]:
    with MPPDouble(provider_node, price_msat=PRICE) as double:
        yield double


@pytest.fixture
def added(mpp: MPPDouble, household_node: LightningdDouble, owner: Any) -> Any:
    return services.provider_add(mpp.url, kind="mpp", name="paymentauth")


def sent_credential(header: str) -> dict[str, Any]:
    scheme, _, encoded = header.partition(" ")
    assert scheme == "Payment" and "=" not in encoded  # base64url, no padding
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    )
    return decoded


@pytest.mark.django_db(transaction=True)
def test_each_streamed_answer_pays_its_own_charge_and_keeps_the_receipt(
    mpp: MPPDouble, added: Any, member: Any, provider_node: LightningdDouble
) -> None:
    first, end = ask(member, MODEL, "what is a sat")
    second, again = ask(member, MODEL, "and a msat")

    assert isinstance(end, Done) and isinstance(again, Done)
    assert (first, second) == ("mpp answers: what is a sat", "mpp answers: and a msat")
    assert ProviderModel.objects.get(model_id="strong-1").request_msat == PRICE
    paid = payments()
    assert [(p.state, p.amount_msat, p.token_may_be_live) for p in paid] == [
        ("complete", PRICE, False)
    ] * 2
    assert len(mpp.offered) == 2 and len(mpp.receipts) == 2
    # Every challenge parameter echoed unchanged, with the preimage of its own payment.
    for header, offered, payment in zip(mpp.authorizations, mpp.offered, paid, strict=True):
        assert sent_credential(header) == {
            "challenge": offered,
            "payload": {"preimage": payment.preimage},
        }
    kept = list(Credential.objects.order_by("id"))
    assert [(c.scheme, c.state, c.payment_purpose) for c in kept] == [
        ("Payment", "spent", p.purpose) for p in paid
    ]
    assert [c.note["receipt"] for c in kept] == mpp.receipts
    assert kept[0].note["receipt"]["reference"] == paid[0].payment_hash
    records = OutsideRequest.objects.order_by("id")
    assert [r.payment_purpose for r in records] == [p.purpose for p in paid]


@pytest.mark.django_db(transaction=True)
def test_a_whole_answer_pays_once_and_keeps_the_receipt(
    mpp: MPPDouble, added: Any, member: Any
) -> None:
    text, end = ask_whole(member, "paymentauth", "strong-1", PRICE, "whole please")

    assert isinstance(end, Done) and text == "mpp answers: whole please"
    assert len(payments()) == 1 and mpp.requests[0]["stream"] is False
    assert Credential.objects.get().note["receipt"]["challengeId"] == mpp.offered[0]["id"]


@pytest.mark.parametrize("switch", ["overprice", "amount_mismatch", "amountless", "expired"])
@pytest.mark.django_db(transaction=True)
def test_a_charge_that_disagrees_with_the_price_is_refused_and_nothing_is_paid(
    mpp: MPPDouble, added: Any, member: Any, provider_node: LightningdDouble, switch: str
) -> None:
    mpp.switches[switch] = True

    text, end = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.INVOICE_REFUSED
    assert "nothing was paid" in end.message
    assert payments() == [] and mpp.authorizations == []
    assert OutsideRequest.objects.get().outcome == "invoice_refused"


@pytest.mark.django_db(transaction=True)
def test_a_500_after_paying_fails_and_the_next_request_pays_its_own_charge(
    mpp: MPPDouble, added: Any, member: Any
) -> None:
    mpp.switches["status_500"] = True
    text, end = ask(member, MODEL)
    mpp.switches.clear()
    again, end_again = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert isinstance(end_again, Done)
    assert [p.state for p in payments()] == ["complete", "complete"]
    assert payments()[0].proof_holds


@pytest.mark.django_db(transaction=True)
def test_over_the_provider_s_cap_nothing_is_paid(mpp: MPPDouble, added: Any, member: Any) -> None:
    budgets.budget_set("caller", "day", PRICE, caller="provider:paymentauth")  # fee not covered

    text, end = ask_whole(member, "paymentauth", "strong-1", PRICE)

    assert isinstance(end, Failed) and end.code == RefusalCode.OVER_BUDGET
    assert payments() == [] and mpp.authorizations == []
    assert Credential.objects.get().state == "spent"


@pytest.mark.django_db(transaction=True)
def test_an_unknown_outcome_stays_pending_and_the_reconciler_settles_it(
    mpp: MPPDouble, added: Any, member: Any, household_node: LightningdDouble
) -> None:
    household_node.faults.next_xpay("drop", paid=True)

    text, end = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PAYMENT_PENDING
    assert Payment.objects.get().state == "pending" and mpp.authorizations == []
    deadline = time.monotonic() + 10
    while wallet.reconcile()["complete"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert Payment.objects.get().proof_holds


@pytest.mark.django_db(transaction=True)
def test_a_402_without_a_lightning_charge_challenge_pays_nothing(
    provider_node: LightningdDouble, household_node: LightningdDouble, owner: Any, member: Any
) -> None:
    with L402Double(provider_node) as l402:  # an L402 server added as an MPP one
        services.provider_add(l402.url, kind="mpp", name="paymentauth")
        text, end = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert "nothing was paid" in end.message and payments() == []
