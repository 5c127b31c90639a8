"""The prepaid kind, through the answer pipeline: a key bought over Lightning, kept sealed,
used until its balance is short, then topped up once within the budgets; never paid twice,
whatever is lost on the way (a status answer, the node's answer to a payment, a process).

Both flavours run against real servers on loopback (tests/providers/doubles), whose invoices
come from their own lightningd double, joined by a channel to the household's node."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import Done, Failed, RefusalCode
from apps.providers import services
from apps.providers.backends.prepaid import catalog_prices
from apps.providers.models import Credential, OutsideRequest, ProviderModel
from apps.wallet import budgets
from apps.wallet import services as wallet
from apps.wallet.models import Payment
from tests.lightningd import LightningdDouble
from tests.providers import paid
from tests.providers.doubles.openai_shape import OpenAIShapedDouble, Refusal
from tests.providers.doubles.ppq import PPQDouble
from tests.providers.doubles.routstr import RoutstrDouble

SAMPLING = Sampling(max_tokens=32, temperature=0.0, top_p=1.0, seed=7)
TOPUP_SAT = 1000  # settings.PROVIDER_TOPUP_SAT, what one top-up buys
ASKERS = 6
DOUBLES = {"routstr": RoutstrDouble, "ppq": PPQDouble}


@pytest.fixture(params=["routstr", "ppq"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prepaid(
    flavour: str, provider_node: LightningdDouble, household_node: LightningdDouble, settings: Any
) -> Iterator[OpenAIShapedDouble]:
    settings.PROVIDER_TOPUP_SAT = TOPUP_SAT
    settings.PROVIDER_TIMEOUT_SECONDS = 5
    with DOUBLES[flavour](provider_node) as double:
        yield double


@pytest.fixture
def routstr(
    provider_node: LightningdDouble, household_node: LightningdDouble, settings: Any
) -> Iterator[RoutstrDouble]:
    settings.PROVIDER_TOPUP_SAT = TOPUP_SAT
    settings.PROVIDER_TIMEOUT_SECONDS = 5
    with RoutstrDouble(provider_node) as double:
        yield double


def added(double: OpenAIShapedDouble) -> Any:
    return services.provider_add(double.url, kind="prepaid", name=double.name)


def ask(member: Any, double: OpenAIShapedDouble, question: str = "what is a sat") -> Done | Failed:
    model = f"{double.name}/strong-1"
    request = pipeline.AnswerRequest(
        member, pipeline.Origin.API, model, [{"role": "user", "content": question}], SAMPLING
    )
    text, end = pipeline.answer_sync(request)
    if isinstance(end, Done):
        assert text == f"{double.name} answers: {question}"
    return end


def paid_to(node: LightningdDouble) -> list[int]:
    """Every invoice the provider's node was paid, in msat."""
    invoices = node.rpc.listinvoices()["invoices"]
    return [i["amount_received_msat"] for i in invoices if i["status"] == "paid"]


def completed(node: LightningdDouble) -> None:
    """Wait until the node's one payment, released, has gone through."""
    deadline = time.monotonic() + 10
    while node.rpc.listpays()["pays"][0]["status"] != "complete":
        assert time.monotonic() < deadline, "the released payment never completed"
        time.sleep(0.02)


def committed_msat() -> int:
    return sum(p.amount_msat + (p.fee_msat or 0) for p in Payment.objects.all())


# Buying the key, and using it ----------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_first_question_buys_a_key_by_paying_once_and_the_next_ones_use_it(
    prepaid: OpenAIShapedDouble, provider_node: LightningdDouble, member: Any
) -> None:
    added(prepaid)
    assert isinstance(ask(member, prepaid), Done)
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]
    credential = Credential.objects.get()
    assert (credential.state, credential.scheme) == ("live", "Bearer")
    assert credential.note["flavour"] == prepaid.name

    assert isinstance(ask(member, prepaid, "and a second one"), Done)
    assert isinstance(ask(member, prepaid, "and a third"), Done)
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]
    assert Payment.objects.count() == 1 and Credential.objects.count() == 1
    assert prepaid.answered == 3
    # The question that bought the key is charged with it; the others paid nothing.
    costs = list(OutsideRequest.objects.order_by("id").values_list("cost_msat", flat=True))
    assert costs == [TOPUP_SAT * 1000, 0, 0]


@pytest.mark.django_db(transaction=True)
def test_routstrs_balance_is_followed_from_its_cost_headers(
    routstr: RoutstrDouble, member: Any
) -> None:
    added(routstr)
    ask(member, routstr)
    ask(member, routstr, "and a second one")
    [key] = routstr.balances
    assert Credential.objects.get().balance_msat == routstr.balances[key] < TOPUP_SAT * 1000


@pytest.mark.django_db(transaction=True)
def test_a_whole_answer_is_paid_from_the_key_and_its_cost_comes_off_the_balance(
    routstr: RoutstrDouble, provider_node: LightningdDouble, member: Any
) -> None:
    added(routstr)
    text, end = paid.ask_whole(member, "routstr", "strong-1", price_msat=100_000)
    assert isinstance(end, Done) and text == "routstr answers: a whole one"
    assert routstr.requests[0]["stream"] is False
    [key] = routstr.balances
    assert Credential.objects.get().balance_msat == routstr.balances[key] < TOPUP_SAT * 1000
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]


@pytest.mark.django_db(transaction=True)
def test_ppqs_balance_is_kept_in_dollars_as_ppq_tells_it(
    provider_node: LightningdDouble, household_node: LightningdDouble, member: Any
) -> None:
    with PPQDouble(provider_node) as ppq:
        added(ppq)
        ask(member, ppq)
    credential = Credential.objects.get()
    assert credential.note["balance_usd"] == TOPUP_SAT / ppq.sats_per_usd
    assert credential.balance_msat is None


@pytest.mark.django_db(transaction=True)
def test_the_key_is_sealed_at_rest(prepaid: Any, member: Any) -> None:
    added(prepaid)
    ask(member, prepaid)
    given = list(getattr(prepaid, "balances", {}))  # Routstr's keys
    for account in getattr(prepaid, "accounts", {}).values():  # PPQ's keys and credit ids
        given += [account.api_key, account.credit_id]
    assert given
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_credential")
        [row] = cursor.fetchall()
    stored = " ".join(str(column) for column in row)
    assert "sk-" not in stored
    assert not any(secret in stored for secret in given)


@pytest.mark.django_db(transaction=True)
def test_a_server_that_speaks_neither_flavour_is_refused_before_anything_is_paid(
    household_node: LightningdDouble, member: Any
) -> None:
    with OpenAIShapedDouble() as plain:
        added(plain)
        end = ask(member, plain)
    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert "not a prepaid provider" in end.message
    assert plain.requests == [] and not Payment.objects.exists()
    assert not Credential.objects.exists()


# Topping up -------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_short_balance_is_topped_up_once_then_the_question_is_answered(
    prepaid: Any, provider_node: LightningdDouble, member: Any
) -> None:
    added(prepaid)
    ask(member, prepaid)
    prepaid.balance_set(0)
    end = ask(member, prepaid, "after the balance ran out")
    assert isinstance(end, Done)
    assert paid_to(provider_node) == [TOPUP_SAT * 1000] * 2
    record = OutsideRequest.objects.filter(outcome="answered").first()
    assert record is not None and record.payment_purpose.startswith("topup:")
    assert "topup" not in Credential.objects.get().note


@pytest.mark.django_db(transaction=True)
def test_a_top_up_over_the_budget_is_refused_with_nothing_paid(
    prepaid: Any, provider_node: LightningdDouble, member: Any
) -> None:
    added(prepaid)
    ask(member, prepaid)
    cap = committed_msat() + 150_000  # room for a question's price, not for a top-up
    budgets.budget_set("caller", "day", cap, caller=f"provider:{prepaid.name}")
    prepaid.balance_set(0)
    end = ask(member, prepaid, "after the balance ran out")
    assert isinstance(end, Failed) and end.code == RefusalCode.OVER_BUDGET
    assert f"top-up of {TOPUP_SAT} sats" in end.message
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]
    assert Payment.objects.count() == 1
    assert "topup" not in Credential.objects.get().note


@pytest.mark.django_db(transaction=True)
def test_a_balance_still_short_after_the_top_up_is_not_topped_up_again(
    routstr: RoutstrDouble, provider_node: LightningdDouble, member: Any
) -> None:
    routstr.max_cost_sats = TOPUP_SAT * 3  # one request needs more than one top-up buys
    added(routstr)
    end = ask(member, routstr)
    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert "right after a top-up" in end.message
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]


@pytest.mark.parametrize("switch", ["overprice", "amountless"])
@pytest.mark.django_db(transaction=True)
def test_an_invoice_not_for_the_amount_asked_is_refused_with_nothing_paid(
    prepaid: Any, provider_node: LightningdDouble, member: Any, switch: str
) -> None:
    added(prepaid)
    prepaid.switches[switch] = True
    end = ask(member, prepaid)
    assert isinstance(end, Failed) and end.code == RefusalCode.INVOICE_REFUSED
    assert paid_to(provider_node) == [] and not Payment.objects.exists()
    assert OutsideRequest.objects.get().outcome == "invoice_refused"

    prepaid.switches.clear()  # a later question starts over, and pays once
    assert isinstance(ask(member, prepaid, "again"), Done)
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]


@pytest.mark.django_db(transaction=True)
def test_a_500_after_paying_is_a_failure_and_the_key_bought_is_used_next_time(
    prepaid: Any, provider_node: LightningdDouble, member: Any
) -> None:
    added(prepaid)
    prepaid.switches["status_500"] = True
    end = ask(member, prepaid)
    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert OutsideRequest.objects.get().outcome == "failed"

    prepaid.switches.clear()
    assert isinstance(ask(member, prepaid, "again"), Done)
    assert paid_to(provider_node) == [TOPUP_SAT * 1000] and Payment.objects.count() == 1


@pytest.mark.parametrize("short", [False, True], ids=["no key yet", "balance short"])
@pytest.mark.django_db(transaction=True)
def test_questions_at_the_same_moment_buy_one_key_or_one_top_up(
    prepaid: Any, provider_node: LightningdDouble, member: Any, short: bool
) -> None:
    added(prepaid)
    if short:
        ask(member, prepaid)
        prepaid.balance_set(0)
    start = threading.Barrier(ASKERS)

    def one(n: int) -> Done | Failed:
        start.wait()
        try:
            return ask(member, prepaid, f"question {n}")
        finally:
            connection.close()

    with ThreadPoolExecutor(ASKERS) as pool:
        ends = list(pool.map(one, range(ASKERS)))

    assert paid_to(provider_node) == [TOPUP_SAT * 1000] * (2 if short else 1)
    assert any(isinstance(end, Done) for end in ends)
    refused = [end for end in ends if isinstance(end, Failed)]
    assert all(end.code == RefusalCode.PAYMENT_PENDING for end in refused), refused


@pytest.mark.django_db(transaction=True)
def test_a_402_with_a_payment_challenge_pays_nothing_on_a_prepaid_provider(
    routstr: RoutstrDouble, provider_node: LightningdDouble, member: Any
) -> None:
    added(routstr)
    ask(member, routstr)
    challenge = ("WWW-Authenticate", 'L402 macaroon="AGIAJEemVQUTEyNCR0exk7ek90Cg==", invoice="x"')
    routstr.refusal = lambda handler, body: Refusal(402, {}, [challenge])  # type: ignore[method-assign]
    end = ask(member, routstr, "on a challenge")
    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert "payment challenge (L402)" in end.message
    assert paid_to(provider_node) == [TOPUP_SAT * 1000] and Payment.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_key_the_provider_no_longer_knows_is_set_aside_and_the_next_question_buys_anew(
    prepaid: Any, provider_node: LightningdDouble, member: Any
) -> None:
    added(prepaid)
    ask(member, prepaid)
    prepaid.keys_forget()
    end = ask(member, prepaid, "with a forgotten key")
    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert "401" in end.message
    assert Credential.objects.get().state == "spent"
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]

    assert isinstance(ask(member, prepaid, "with a new key"), Done)
    assert paid_to(provider_node) == [TOPUP_SAT * 1000] * 2
    assert [c.state for c in Credential.objects.all()] == ["live", "spent"]


# Lost answers and crashes -----------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_lost_status_answer_is_recovered_by_the_invoice_and_paid_once(
    routstr: RoutstrDouble, provider_node: LightningdDouble, member: Any
) -> None:
    added(routstr)
    routstr.switches["lose_status"] = True
    assert isinstance(ask(member, routstr), Done)
    assert routstr.recovered == 1 and "lose_status" not in routstr.switches
    assert paid_to(provider_node) == [TOPUP_SAT * 1000]
    assert Credential.objects.get().state == "live"


@pytest.mark.django_db(transaction=True)
def test_a_key_whose_payment_outcome_is_unknown_is_finished_once_the_wallet_settles_it(
    routstr: RoutstrDouble,
    provider_node: LightningdDouble,
    household_node: LightningdDouble,
    member: Any,
) -> None:
    added(routstr)
    household_node.faults.next_xpay("held", reply="drop")  # paid, but the node's answer is lost
    end = ask(member, routstr)
    assert isinstance(end, Failed) and end.code == RefusalCode.PAYMENT_PENDING
    assert Credential.objects.get().state == "pending"

    end = ask(member, routstr, "while it is in flight")  # nothing is paid again
    assert isinstance(end, Failed) and end.code == RefusalCode.PAYMENT_PENDING

    household_node.release(Payment.objects.get().payment_hash)
    completed(household_node)
    assert wallet.reconcile()["complete"] == 1
    assert isinstance(ask(member, routstr, "once it went through"), Done)
    assert Payment.objects.count() == 1 and paid_to(provider_node) == [TOPUP_SAT * 1000]
    assert Credential.objects.get().state == "live" and routstr.answered == 1


@pytest.mark.django_db(transaction=True)
def test_a_top_up_whose_payment_outcome_is_unknown_is_credited_and_used_not_paid_again(
    prepaid: Any,
    provider_node: LightningdDouble,
    household_node: LightningdDouble,
    member: Any,
) -> None:
    added(prepaid)
    ask(member, prepaid)
    prepaid.balance_set(0)
    household_node.faults.next_xpay("drop", paid=True)  # as a process killed right after paying
    end = ask(member, prepaid, "after the balance ran out")
    assert isinstance(end, Failed) and end.code == RefusalCode.PAYMENT_PENDING
    assert "topup" in Credential.objects.get().note

    assert wallet.reconcile()["complete"] == 1
    assert isinstance(ask(member, prepaid, "once it went through"), Done)
    assert paid_to(provider_node) == [TOPUP_SAT * 1000] * 2
    assert Payment.objects.count() == 2
    assert "topup" not in Credential.objects.get().note


# Prices -----------------------------------------------------------------------------------
def test_routstrs_sats_pricing_becomes_msat_per_thousand_tokens() -> None:
    models = {
        "data": [
            {
                "id": "strong-1",
                "context_length": 8192,
                "sats_pricing": {"prompt": 0.1, "completion": "0.25", "max_cost": 60},
            },
            {"id": "dollars-only", "pricing": {"prompt": "0.000002"}},
            {"id": "broken", "sats_pricing": {"prompt": -1, "completion": "x", "max_cost": True}},
            {"id": "absurd", "sats_pricing": {"prompt": "1e1000000", "completion": "NaN"}},
        ]
    }
    assert catalog_prices(models) == {
        "strong-1": {
            "prompt_msat_per_1k": 100_000,
            "completion_msat_per_1k": 250_000,
            "max_cost_msat": 60_000,
            "context_length": 8192,
        },
        "dollars-only": {},
        "broken": {},
        "absurd": {},
    }


@pytest.mark.django_db
def test_a_routstr_providers_models_carry_its_published_prices(routstr: RoutstrDouble) -> None:
    added(routstr)
    model = ProviderModel.objects.get(provider__name="routstr", model_id="strong-1")
    assert (model.prompt_msat_per_1k, model.completion_msat_per_1k) == (1_000_000, 2_000_000)
    route = services.route_for("routstr/strong-1")
    assert route is not None and route.price_msat(32) == 32 * 2 * 1000  # 2 sats a token
