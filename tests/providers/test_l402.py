"""L402 providers: a 402 is paid once through the wallet, its token kept and reused as a prepaid
balance; every bad invoice is refused before anything is paid; an unknown outcome stays pending
and is never paid again. Against an Aperture-shaped server on loopback, paid over a channel
between two lightningd doubles."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from nostr_sdk import Keys

from apps.identity.models import Member
from apps.inference.backends.base import Done, Failed, RefusalCode
from apps.providers import credentials, sealing, services
from apps.providers.models import Credential, OutsideRequest, ProviderModel
from apps.wallet import budgets
from apps.wallet import services as wallet
from apps.wallet.models import Payment
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.mpp import MPPDouble
from tests.providers.paid import ask, ask_whole, committed_msat, payments

PRICE = 20_000
MODEL = "aperture/strong-1"


@pytest.fixture
def l402(provider_node: LightningdDouble) -> Iterator[L402Double]:
    with L402Double(provider_node, price_msat=PRICE, prices={"strong-2": 30_000}) as double:
        yield double


@pytest.fixture
def aperture(l402: L402Double, household_node: LightningdDouble, owner: Any) -> Any:
    return services.provider_add(l402.url, kind="l402", name="aperture")


def paid_invoices(node: LightningdDouble) -> list[dict[str, Any]]:
    return [i for i in node.rpc.listinvoices()["invoices"] if i["status"] == "paid"]


@pytest.mark.django_db(transaction=True)
def test_the_price_in_the_provider_s_manifest_is_the_price_shown(aperture: Any) -> None:
    prices = dict(ProviderModel.objects.values_list("model_id", "request_msat"))

    assert prices == {"strong-1": PRICE, "strong-2": 30_000}


@pytest.mark.django_db(transaction=True)
def test_a_streamed_answer_is_paid_once_and_the_kept_token_answers_the_next_question(
    l402: L402Double, aperture: Any, member: Any, provider_node: LightningdDouble
) -> None:
    first, end = ask(member, MODEL, "what is a sat")
    second, again = ask(member, MODEL, "and a msat")

    assert first == "l402 answers: what is a sat" and second == "l402 answers: and a msat"
    assert isinstance(end, Done) and isinstance(again, Done)
    [payment] = payments()
    assert (payment.state, payment.caller, payment.member_id) == (
        "complete",
        "provider:aperture",
        member.pk,
    )
    assert payment.purpose.startswith("l402:aperture:") and payment.token_may_be_live
    assert len(paid_invoices(provider_node)) == 1 and l402.challenges == 1
    # Retried with the token exactly as offered and the lowercase hex preimage; then reused.
    assert l402.authorizations == [f"L402 {l402.offered[0]}:{payment.preimage}"] * 2
    kept = Credential.objects.get()
    assert (kept.state, kept.scheme, kept.payment_purpose) == ("live", "L402", payment.purpose)
    assert sealing.unseal(kept.secret_sealed) == l402.offered[0]
    assert payment.preimage not in kept.secret_sealed + str(kept.note)
    records = OutsideRequest.objects.order_by("id")
    assert [r.payment_purpose for r in records] == [payment.purpose, ""]


@pytest.mark.django_db(transaction=True)
def test_a_whole_answer_is_paid_once_and_the_kept_token_answers_the_next(
    l402: L402Double, aperture: Any, member: Any
) -> None:
    text, end = ask_whole(member, "aperture", "strong-1", PRICE, "whole please")
    again, end_again = ask_whole(member, "aperture", "strong-1", PRICE, "once more")

    assert (text, again) == ("l402 answers: whole please", "l402 answers: once more")
    assert isinstance(end, Done) and isinstance(end_again, Done)
    assert [r["stream"] for r in l402.requests] == [False, False]
    assert len(payments()) == 1 and l402.challenges == 1


@pytest.mark.parametrize(
    "switch", ["token_param", "folded", "unquoted", "urlsafe_unpadded", "lsat_only"]
)
@pytest.mark.django_db(transaction=True)
def test_every_shape_of_challenge_is_read_and_answered_with_the_token_as_received(
    l402: L402Double, aperture: Any, member: Any, switch: str
) -> None:
    l402.switches[switch] = True

    text, end = ask(member, MODEL)

    assert isinstance(end, Done), end
    [payment] = payments()
    scheme = "LSAT" if switch == "lsat_only" else "L402"
    assert l402.authorizations == [f"{scheme} {l402.offered[0]}:{payment.preimage}"]
    assert re.fullmatch(r"[0-9a-f]{64}", payment.preimage)


@pytest.mark.parametrize("switch", ["overprice", "amountless", "hash_mismatch"])
@pytest.mark.django_db(transaction=True)
def test_a_bad_invoice_is_refused_and_nothing_is_paid(
    l402: L402Double, aperture: Any, member: Any, provider_node: LightningdDouble, switch: str
) -> None:
    l402.switches[switch] = True

    text, end = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.INVOICE_REFUSED
    assert "nothing was paid" in end.message
    assert payments() == [] and paid_invoices(provider_node) == []
    assert not Credential.objects.exclude(state="spent").exists()
    assert OutsideRequest.objects.get().outcome == "invoice_refused"


@pytest.mark.django_db(transaction=True)
def test_a_second_402_right_after_paying_fails_the_request_and_pays_nothing_more(
    l402: L402Double, aperture: Any, member: Any, provider_node: LightningdDouble
) -> None:
    l402.switches["again_402"] = True

    text, end = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert "nothing more was paid" in end.message
    assert len(payments()) == 1 and len(paid_invoices(provider_node)) == 1
    assert l402.challenges == 2 and l402.answered == 0
    assert OutsideRequest.objects.get().outcome == "failed"


@pytest.mark.django_db(transaction=True)
def test_a_500_after_paying_fails_the_request_keeps_the_proof_and_the_token(
    l402: L402Double, aperture: Any, member: Any
) -> None:
    l402.switches["status_500"] = True
    text, end = ask(member, MODEL)
    l402.switches.clear()
    again, end_again = ask(member, MODEL, "again")

    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert isinstance(end_again, Done)
    [payment] = payments()
    assert payment.state == "complete" and payment.proof_holds
    assert l402.challenges == 1 and len(l402.authorizations) == 2


@pytest.mark.parametrize("switch", ["cut_stream", "garbage", "html", "huge"])
@pytest.mark.django_db(transaction=True)
def test_a_broken_answer_after_paying_is_a_clear_failure_and_is_not_paid_again(
    l402: L402Double, aperture: Any, member: Any, switch: str
) -> None:
    l402.switches[switch] = True
    text, end = ask(member, MODEL, "one two three four five")
    l402.switches.clear()
    again, end_again = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert isinstance(end_again, Done) and len(payments()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_silent_provider_times_out_after_paying_and_the_token_is_kept(
    l402: L402Double, aperture: Any, member: Any
) -> None:
    aperture.timeout_seconds = 1.0
    aperture.save()
    l402.switches["silent"] = True
    text, end = ask(member, MODEL)
    l402.switches.clear()
    again, end_again = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_TIMEOUT
    assert isinstance(end_again, Done) and len(payments()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_used_up_token_is_marked_spent_and_a_new_one_bought_within_the_budget(
    provider_node: LightningdDouble, household_node: LightningdDouble, owner: Any, member: Any
) -> None:
    with L402Double(provider_node, price_msat=PRICE, requests_per_token=1) as metered:
        services.provider_add(metered.url, kind="l402", name="aperture")
        answers = [ask(member, MODEL, f"question {n}")[1] for n in range(3)]

        assert all(isinstance(end, Done) for end in answers)
        assert [p.state for p in payments()] == ["complete"] * 3
        assert list(Credential.objects.order_by("id").values_list("state", flat=True)) == [
            "spent",
            "spent",
            "live",
        ]
        assert metered.challenges == 3


@pytest.mark.django_db(transaction=True)
def test_a_token_the_provider_refuses_with_401_is_set_aside_and_the_next_question_buys_anew(
    l402: L402Double, aperture: Any, member: Any
) -> None:
    assert isinstance(ask(member, MODEL, "first")[1], Done)
    l402.switches["revoked"] = True
    _, refused = ask(member, MODEL, "second")
    assert isinstance(refused, Failed) and refused.code == RefusalCode.PROVIDER_FAILED
    assert list(Credential.objects.values_list("state", flat=True)) == ["spent"]
    l402.switches["revoked"] = False

    assert isinstance(ask(member, MODEL, "third")[1], Done)
    assert [p.state for p in payments()] == ["complete", "complete"]


@pytest.mark.django_db(transaction=True)
def test_over_the_provider_s_cap_the_request_is_refused_before_anything_is_paid(
    l402: L402Double, aperture: Any, member: Any
) -> None:
    budgets.budget_set("caller", "day", PRICE - 1, caller="provider:aperture")

    through_pipeline = ask(member, MODEL)[1]
    straight = ask_whole(member, "aperture", "strong-1", PRICE)[1]

    assert isinstance(through_pipeline, Failed)
    assert through_pipeline.code == RefusalCode.OVER_BUDGET
    assert isinstance(straight, Failed) and straight.code == RefusalCode.OVER_BUDGET
    assert payments() == [] and l402.challenges == 1  # only the direct call reached it
    assert not Credential.objects.exclude(state="spent").exists()


def reconciled_until_complete(seconds: float = 10.0) -> None:
    """The reconciler's periodic runs, until the node's records say the payment completed."""
    deadline = time.monotonic() + seconds
    while wallet.reconcile()["complete"] == 0:
        assert time.monotonic() < deadline, "the payment never settled"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_a_payment_in_flight_fails_the_request_clearly_and_is_never_bought_twice(
    l402: L402Double, aperture: Any, member: Any, household_node: LightningdDouble
) -> None:
    household_node.faults.next_xpay("held", reply="error")

    text, end = ask(member, MODEL)
    waited, end_waited = ask(member, MODEL)  # its token is still being paid: not bought again

    assert isinstance(end, Failed) and end.code == RefusalCode.PAYMENT_PENDING
    assert "not be paid again" in end.message
    assert isinstance(end_waited, Failed) and end_waited.code == RefusalCode.PAYMENT_PENDING
    [payment] = payments()
    assert payment.state == "pending" and Credential.objects.get().state == "pending"
    assert l402.challenges == 1 and l402.authorizations == []

    household_node.release(payment.payment_hash)
    reconciled_until_complete()
    settled, end_settled = ask(member, MODEL, "now")

    assert isinstance(end_settled, Done) and settled == "l402 answers: now"
    assert len(payments()) == 1 and l402.challenges == 1
    assert Credential.objects.get().state == "live"
    assert l402.authorizations == [f"L402 {l402.offered[0]}:{Payment.objects.get().preimage}"]


@pytest.mark.django_db(transaction=True)
def test_a_payment_whose_answer_was_lost_is_settled_by_the_reconciler_and_its_token_used(
    l402: L402Double, aperture: Any, member: Any, household_node: LightningdDouble
) -> None:
    household_node.faults.next_xpay("drop", paid=True)  # paid, but xpay's answer never came

    text, end = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PAYMENT_PENDING
    assert Payment.objects.get().state == "pending"

    reconciled_until_complete()
    settled, end_settled = ask(member, MODEL, "now")

    assert isinstance(end_settled, Done) and settled == "l402 answers: now"
    assert len(payments()) == 1 and l402.challenges == 1
    assert Credential.objects.get().state == "live"


@pytest.mark.django_db(transaction=True)
def test_a_crash_right_after_paying_leaves_a_token_that_is_used_not_bought_again(
    l402: L402Double, aperture: Any, member: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(credential_id: int) -> bool:
        raise SystemExit("the worker was killed right after paying")

    with monkeypatch.context() as patched:
        patched.setattr("apps.providers.credentials.credential_live", killed)
        with pytest.raises(SystemExit):
            ask(member, MODEL)
    assert Credential.objects.get().state == "pending"
    assert Payment.objects.get().state == "complete"

    text, end = ask(member, MODEL, "after the restart")

    assert isinstance(end, Done) and text == "l402 answers: after the restart"
    assert len(payments()) == 1 and l402.challenges == 1
    assert Credential.objects.get().state == "live"


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_paid_requests_never_pass_any_budget(
    provider_node: LightningdDouble, household_node: LightningdDouble, owner: Any
) -> None:
    # Each token buys one request here, so every request must pay: four members with room for
    # two payments each (20,000 msat plus up to 5,000 of fee held while pending), and a
    # household budget below the sum of their allowances.
    allowance, household = 50_000, 150_000
    people = [
        Member.objects.create_user(pubkey=Keys.generate().public_key().to_hex(), role="member")
        for _ in range(4)
    ]
    for person in people:
        budgets.budget_set("member", "day", allowance, member=person)
    budgets.budget_set("household", "day", household)
    start = threading.Barrier(20)

    with L402Double(provider_node, price_msat=PRICE, requests_per_token=1) as metered:
        services.provider_add(metered.url, kind="l402", name="aperture")

        def one(n: int) -> Done | Failed:
            start.wait()
            try:
                return ask(people[n % 4], MODEL, f"question {n}")[1]
            finally:
                connection.close()

        with ThreadPoolExecutor(20) as pool:
            ends = list(pool.map(one, range(20)))

    for person in people:
        mine = Payment.objects.filter(member=person)
        assert sum(committed_msat(p) for p in mine) <= allowance
    assert sum(committed_msat(p) for p in payments()) <= household
    complete = Payment.objects.filter(state="complete")
    assert complete.count() == len(paid_invoices(provider_node)) > 0
    assert not Payment.objects.filter(state="pending").exists()
    answered = [end for end in ends if isinstance(end, Done)]
    refused = [end for end in ends if isinstance(end, Failed)]
    assert 0 < len(answered) <= complete.count() and len(refused) >= 20 - complete.count()
    # Refused by a budget before paying, or (a token bought by one request and used first by
    # another, as one-request tokens allow) asked to pay again: never paid twice.
    assert {end.code for end in refused} <= {RefusalCode.OVER_BUDGET, RefusalCode.PROVIDER_FAILED}


@pytest.mark.django_db(transaction=True)
def test_a_402_without_an_l402_challenge_pays_nothing(
    provider_node: LightningdDouble, household_node: LightningdDouble, owner: Any, member: Any
) -> None:
    with MPPDouble(provider_node) as mpp:  # an MPP server added as an L402 one
        services.provider_add(mpp.url, kind="l402", name="aperture")
        text, end = ask(member, MODEL)

    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert "nothing was paid" in end.message and payments() == []
    assert not Credential.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_token_left_by_a_crash_before_paying_is_set_aside_and_a_new_one_bought(
    l402: L402Double, aperture: Any, member: Any
) -> None:
    credentials.credential_open(aperture.pk, "L402", "never-paid", "l402:aperture:crashed")
    Credential.objects.update(created_at=timezone.now() - timedelta(minutes=2))

    text, end = ask(member, MODEL)

    assert isinstance(end, Done) and len(payments()) == 1
    assert list(Credential.objects.order_by("id").values_list("state", flat=True)) == [
        "spent",
        "live",
    ]
    assert l402.authorizations == [f"L402 {l402.offered[0]}:{Payment.objects.get().preimage}"]


@pytest.mark.django_db(transaction=True)
def test_the_household_s_node_not_answering_is_not_held_against_the_provider(
    l402: L402Double, aperture: Any, member: Any, settings: Any, tmp_path: Any
) -> None:
    settings.LIGHTNING_RPC = str(tmp_path / "no-node" / "lightning-rpc")
    wallet._networks.clear()
    _, refused = ask(member, MODEL, "while the node is down")

    assert isinstance(refused, Failed) and refused.code == RefusalCode.WALLET_UNAVAILABLE
    assert OutsideRequest.objects.get().outcome == "wallet_unavailable"
    assert payments() == []
