"""How an agent's steps pay providers: a step's request is keyed by its own request id
(`agent-<task>-step-<step>`) and runs again after a crash or a lost answer, while the provider
sends a new invoice every time. Nothing is ever paid twice, an unknown payment is never a
failure, and a prepaid top-up is never more than the price the step was approved at."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from apps.inference import pipeline
from apps.inference.answering import Sampling, answer_collected
from apps.inference.backends.base import AnswerRefused, Done, Failed, RefusalCode
from apps.providers import calling, services
from apps.providers.backends.base import Call
from apps.providers.kinds import kind_for
from apps.providers.models import Credential, ProviderModel
from apps.wallet import budgets
from apps.wallet import services as wallet
from apps.wallet.models import Payment
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.mpp import MPPDouble
from tests.providers.doubles.openai_shape import OpenAIShapedDouble
from tests.providers.doubles.ppq import PPQDouble
from tests.providers.doubles.routstr import RoutstrDouble
from tests.providers.paid import payments

PRICE = 15_000
TASK = "agent:3"
STEP = "agent-3-step-7"
SAMPLING = Sampling(max_tokens=32, temperature=0.0, top_p=1.0, seed=7)
TOPUP_SAT = 1000
DOUBLES = {"routstr": RoutstrDouble, "ppq": PPQDouble}


def step_run(member: Any, provider_name: str, model_id: str, price_msat: int) -> Done | Failed:
    """One run of the agent's step: a whole answer asked straight through calling.py, under
    the step's fixed request id, paid for the task."""
    provider = services.provider_info(services.provider_get(provider_name))
    body = {"model": model_id, "messages": [{"role": "user", "content": "a step"}], "stream": False}
    call = Call(provider, model_id, body, STEP, member.pk, price_msat, "agent", payer=TASK)

    async def whole() -> Done | Failed:
        try:
            events = await calling.open_outside(call, kind_for(provider))
        except AnswerRefused as refusal:
            return Failed(refusal.code, str(refusal))
        return (await answer_collected(events))[1]

    return async_to_sync(whole)()


def settled(payment_hash: str) -> Payment:
    deadline = time.monotonic() + 10
    while True:
        wallet.reconcile()
        payment = Payment.objects.get(payment_hash=payment_hash)
        if payment.state != Payment.State.PENDING:
            return payment
        assert time.monotonic() < deadline, "the released payment never settled"
        time.sleep(0.05)


# MPP: every run gets a new charge -------------------------------------------------------------
@pytest.fixture
def mpp(provider_node: LightningdDouble, household_node: LightningdDouble) -> Iterator[MPPDouble]:
    with MPPDouble(provider_node, price_msat=PRICE) as double:
        services.provider_add(double.url, kind="mpp", name="paymentauth")
        yield double


@pytest.mark.django_db(transaction=True)
def test_a_step_run_again_while_its_payment_is_pending_is_pending_not_failed_then_uses_it(
    mpp: MPPDouble, member: Any, household_node: LightningdDouble
) -> None:
    household_node.faults.next_xpay("held", reply="drop")  # in flight, the answer lost

    first = step_run(member, "paymentauth", "strong-1", PRICE)
    again = step_run(member, "paymentauth", "strong-1", PRICE)  # a new charge, a new invoice

    assert isinstance(first, Failed) and first.code == RefusalCode.PAYMENT_PENDING
    assert isinstance(again, Failed) and again.code == RefusalCode.PAYMENT_PENDING
    assert "still pending" in again.message
    (pending,) = payments()
    assert (pending.state, pending.purpose) == ("pending", f"mpp:paymentauth:{STEP}")
    assert (pending.caller, pending.payer) == ("provider:paymentauth", TASK)

    household_node.release(pending.payment_hash)
    assert settled(pending.payment_hash).state == "complete"
    # The next run sends the credential the earlier one paid for: answered, paid once.
    third = step_run(member, "paymentauth", "strong-1", PRICE)

    assert isinstance(third, Done)
    assert len(payments()) == 1 and len(mpp.authorizations) == 1
    assert mpp.receipts[0]["reference"] == pending.payment_hash


@pytest.mark.django_db(transaction=True)
def test_a_step_whose_paid_charge_was_lost_is_not_paid_again(
    mpp: MPPDouble, member: Any, household_node: LightningdDouble
) -> None:
    household_node.faults.next_xpay("drop", paid=True)  # paid, the answer lost
    first = step_run(member, "paymentauth", "strong-1", PRICE)
    assert isinstance(first, Failed) and first.code == RefusalCode.PAYMENT_PENDING
    Credential.objects.update(note={})  # the challenge it paid for is not kept

    again = step_run(member, "paymentauth", "strong-1", PRICE)

    assert isinstance(again, Failed) and again.code != RefusalCode.INVOICE_REFUSED
    assert "paid already and its answer was lost" in again.message
    assert [p.state for p in payments()] == ["complete"] and mpp.authorizations == []


@pytest.mark.django_db(transaction=True)
def test_a_step_whose_payment_failed_pays_the_new_charge_once(
    mpp: MPPDouble, member: Any, household_node: LightningdDouble, provider_node: LightningdDouble
) -> None:
    household_node.faults.next_xpay("no_route")
    first = step_run(member, "paymentauth", "strong-1", PRICE)
    assert isinstance(first, Failed) and "nothing was paid" in first.message

    again = step_run(member, "paymentauth", "strong-1", PRICE)
    once_more = step_run(member, "paymentauth", "strong-1", PRICE)  # paid: not paid again

    assert isinstance(again, Done)
    # The run after an answer sends the paid credential again; the provider refuses it.
    assert isinstance(once_more, Failed) and "nothing more was paid" in once_more.message
    purpose = f"mpp:paymentauth:{STEP}"
    assert [(p.purpose, p.state) for p in payments()] == [
        (purpose, "failed"),
        (f"mpp~2:paymentauth:{STEP}", "complete"),
    ]
    # Still found by the step's request id, as an agent's receipts find its payments.
    assert Payment.objects.filter(purpose__endswith=f":{STEP}", state="complete").count() == 1
    paid = [i for i in provider_node.rpc.listinvoices()["invoices"] if i["status"] == "paid"]
    assert len(paid) == 1


# L402: a failed payment's token is worthless; the retry buys one under the next purpose -------
@pytest.mark.django_db(transaction=True)
def test_an_l402_step_whose_payment_failed_buys_its_token_once_on_the_next_run(
    provider_node: LightningdDouble, household_node: LightningdDouble, member: Any
) -> None:
    with L402Double(provider_node) as l402:
        services.provider_add(l402.url, kind="l402", name="tokens")
        model = ProviderModel.objects.exclude(request_msat=None).order_by("id").first()
        assert model is not None and model.request_msat is not None
        household_node.faults.next_xpay("no_route")
        first = step_run(member, "tokens", model.model_id, model.request_msat)
        again = step_run(member, "tokens", model.model_id, model.request_msat)

    assert isinstance(first, Failed) and first.code != RefusalCode.INVOICE_REFUSED
    assert isinstance(again, Done)
    live = Credential.objects.get(state="live")
    assert live.payment_purpose == f"l402~2:tokens:{STEP}"
    assert [p.state for p in payments()] == ["failed", "complete"]


# Prepaid: a step tops up no more than it was approved for -------------------------------------
@pytest.fixture(params=["routstr", "ppq"])
def prepaid(
    request: pytest.FixtureRequest,
    provider_node: LightningdDouble,
    household_node: LightningdDouble,
    settings: Any,
) -> Iterator[OpenAIShapedDouble]:
    settings.PROVIDER_TOPUP_SAT = TOPUP_SAT
    settings.PROVIDER_TIMEOUT_SECONDS = 5
    with DOUBLES[str(request.param)](provider_node) as double:
        services.provider_add(double.url, kind="prepaid", name=double.name)
        yield double


def member_asks(member: Any, double: OpenAIShapedDouble) -> Done | Failed:
    request = pipeline.AnswerRequest(
        member, pipeline.Origin.API, f"{double.name}/strong-1",
        [{"role": "user", "content": "what is a sat"}], SAMPLING,
    )  # fmt: skip
    return pipeline.answer_sync(request)[1]


@pytest.mark.django_db(transaction=True)
def test_a_step_s_top_up_is_at_most_the_price_approved_not_the_provider_s_top_up(
    prepaid: OpenAIShapedDouble, member: Any, provider_node: LightningdDouble
) -> None:
    assert isinstance(member_asks(member, prepaid), Done)  # the key, with a whole top-up
    prepaid.balance_set(0)  # type: ignore[attr-defined]
    approved = 200_000  # 200 sat: what the step was approved at

    step_run(member, prepaid.name, "strong-1", approved)

    paid = [i for i in provider_node.rpc.listinvoices()["invoices"] if i["status"] == "paid"]
    assert sorted(i["amount_received_msat"] for i in paid) == [approved, TOPUP_SAT * 1000]
    step = Payment.objects.get(purpose=f"topup:{prepaid.name}:{STEP}")
    assert (step.amount_msat, step.payer) == (approved, TASK)
    assert step.caller == f"provider:{prepaid.name}"


@pytest.mark.django_db(transaction=True)
def test_a_step_approved_below_the_provider_s_smallest_top_up_pays_nothing(
    prepaid: OpenAIShapedDouble, member: Any, provider_node: LightningdDouble
) -> None:
    assert isinstance(member_asks(member, prepaid), Done)
    prepaid.balance_set(0)  # type: ignore[attr-defined]
    approved = 50_000 if isinstance(prepaid, PPQDouble) else 500  # below 100 sat; below 1 sat

    end = step_run(member, prepaid.name, "strong-1", approved)

    assert isinstance(end, Failed) and end.code == RefusalCode.INVOICE_REFUSED
    assert "more than the" in end.message and "approved" in end.message
    assert "Nothing was paid" in end.message
    assert Payment.objects.count() == 1
    assert "topup" not in Credential.objects.get().note


@pytest.mark.django_db(transaction=True)
def test_a_provider_cap_holds_for_an_agent_s_step(
    mpp: MPPDouble, member: Any, household_node: LightningdDouble
) -> None:
    budgets.budget_set("caller", "total", 1_000_000, caller=TASK)
    budgets.budget_set("caller", "day", 0, caller="provider:paymentauth")

    end = step_run(member, "paymentauth", "strong-1", PRICE)

    assert isinstance(end, Failed) and end.code == RefusalCode.OVER_BUDGET
    assert payments() == [] and mpp.authorizations == []


@pytest.mark.parametrize("tight", ["task", "provider"])
@pytest.mark.django_db(transaction=True)
def test_the_pipeline_checks_the_task_s_cap_and_the_provider_s_before_sending(
    mpp: MPPDouble, member: Any, tight: str
) -> None:
    roomy, fee_short = 1_000_000, PRICE  # the price fits, its fee does not
    provider_cap, task_cap = (roomy, fee_short) if tight == "task" else (fee_short, roomy)
    budgets.budget_set("caller", "day", provider_cap, caller="provider:paymentauth")
    budgets.budget_set("caller", "total", task_cap, caller=TASK)
    request = pipeline.AnswerRequest(
        member, pipeline.Origin.API, "paymentauth/strong-1",
        [{"role": "user", "content": "a step"}], SAMPLING, request_id=STEP, payer=TASK,
    )  # fmt: skip

    end = pipeline.answer_sync(request)[1]

    assert isinstance(end, Failed) and end.code == RefusalCode.OVER_BUDGET
    assert "nothing was sent or paid" in end.message and mpp.authorizations == []
