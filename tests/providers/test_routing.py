"""Routes across providers (`route/<name>`): fallback along the owner's order, the reliable
first; spread giving each new conversation to another provider; both through the one pipeline,
each attempt recorded against its own provider. The providers are OpenAI-shaped servers on
loopback (the home-network kind: nothing is paid), and once an Aperture-shaped L402 server paid
over a channel between two lightningd doubles."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import AnswerRefused, Done, Failed, RefusalCode
from apps.privacy.models import Egress
from apps.providers import routing, services
from apps.providers.models import OutsideRequest, Provider, ProviderModel, RouteChoice
from apps.wallet import budgets
from apps.wallet.models import Payment
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.openai_shape import OpenAIShapedDouble
from tests.providers.lan import NAMES

SAMPLING = Sampling(max_tokens=32, temperature=0.0, top_p=1.0, seed=7)


def _ask(
    member: Any, model: str, question: str = "what is a sat", conversation: str | None = None
) -> tuple[str, Done | Failed]:
    request = pipeline.AnswerRequest(
        member,
        pipeline.Origin.CHAT,
        model,
        [{"role": "user", "content": question}],
        SAMPLING,
        conversation_key=conversation,
    )
    return pipeline.answer_sync(request)


def _records(provider: str, outcome: str, count: int, *, ago: timedelta = timedelta()) -> None:
    for _ in range(count):
        record = OutsideRequest.objects.create(
            provider=Provider.objects.get(name=provider),
            model_id="strong-1",
            request_id="earlier",
            outcome=outcome,
        )
        OutsideRequest.objects.filter(pk=record.pk).update(created_at=timezone.now() - ago)


def _paid_provider(name: str, request_msat: int) -> None:
    """A paying provider's row and price, as its catalog left them (it is never called)."""
    provider = Provider.objects.create(
        name=name, kind="l402", base_url="http://127.0.0.1:9", max_price_msat=50_000,
        topup_msat=0,
    )  # fmt: skip
    ProviderModel.objects.create(provider=provider, model_id="big", request_msat=request_msat)


# The owner's routes ----------------------------------------------------------------------


@pytest.mark.django_db
def test_no_provider_may_take_the_name_kept_for_routes(owner: Any) -> None:
    with pytest.raises(services.ProviderError, match="kept for routes"):
        services.provider_add("http://127.0.0.1:9", kind="openai", name="route")
    assert not Provider.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_route_is_set_replaced_and_removed_with_audit_rows(added: None) -> None:
    routing.route_set("strong", "fallback", ["alpha/strong-1", "beta/strong-2"], actor="owner")
    routing.route_set("strong", "spread", ["beta/strong-1", "gamma/strong-1"], actor="owner")

    [route] = routing.routes_list()
    assert (route.policy, route.model_names) == ("spread", ["beta/strong-1", "gamma/strong-1"])
    routing.route_remove("strong", actor="owner")
    assert routing.routes_list() == []
    rows = list(AuditEvent.objects.filter(subject="route/strong").order_by("id"))
    assert [row.action for row in rows] == ["route_set", "route_set", "route_removed"]
    assert rows[1].detail == "spread: beta/strong-1, gamma/strong-1"
    with pytest.raises(routing.RouteError, match="no route named 'gone'"):
        routing.route_remove("gone")


@pytest.mark.parametrize(
    ("policy", "models", "error"),
    [
        ("fallback", ["alpha/strong-1", "alpha/nothing"], "no model named 'alpha/nothing'"),
        ("fallback", ["nowhere/strong-1"], "no model named 'nowhere/strong-1'"),
        ("fallback", ["alpha/strong-1", "alpha/strong-1"], "each model once"),
        ("fallback", ["route/other"], "cannot name another route"),
        ("fallback", [], "1 to 8 models"),
        ("spread", ["alpha/strong-1"], "2 to 8 models"),
        ("sometimes", ["alpha/strong-1"], "Unknown policy 'sometimes'"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_route_that_cannot_be_followed_is_refused_and_nothing_is_kept(
    added: None, policy: str, models: list[str], error: str
) -> None:
    with pytest.raises(routing.RouteError, match=error):
        routing.route_set("strong", policy, models)

    assert routing.routes_list() == []
    assert not AuditEvent.objects.filter(action="route_set").exists()


@pytest.mark.django_db(transaction=True)
def test_routes_are_listed_at_the_highest_price_of_the_models_a_member_may_use(
    added: None, member: Any, friend: Any
) -> None:
    _paid_provider("paid", request_msat=7_000)
    routing.route_set("strong", "fallback", ["alpha/strong-1", "paid/big", "beta/strong-1"])

    listed = {choice.name: choice for choice in pipeline.choices_for(member, 64)}
    assert listed["route/strong"].price_msat == 7_000
    assert listed["route/strong"].owned_by == "route" and listed["route/strong"].outside
    # A friend uses nothing outside: a route of outside models is not theirs to ask.
    assert "route/strong" not in {choice.name for choice in pipeline.choices_for(friend, 64)}
    asked = pipeline.AnswerRequest(friend, pipeline.Origin.API, "route/strong", [], SAMPLING)
    with pytest.raises(AnswerRefused) as refused:
        pipeline.route_of(asked)
    assert refused.value.code == RefusalCode.MODEL_NOT_FOUND


# Fallback --------------------------------------------------------------------------------


@pytest.mark.parametrize(("switch", "outcome"), [("status_500", "failed"), ("silent", "timeout")])
@pytest.mark.django_db(transaction=True)
def test_fallback_after_a_failure_reaches_the_next_and_names_both(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any, switch: str, outcome: str
) -> None:
    routing.route_set("strong", "fallback", ["alpha/strong-1", "beta/strong-2", "gamma/strong-1"])
    Provider.objects.filter(name="alpha").update(timeout_seconds=0.5)
    lan["alpha"].switches[switch] = True

    text, end = _ask(member, "route/strong")

    assert text == "beta answers: what is a sat"
    assert isinstance(end, Done)
    assert (end.provenance["model"], end.provenance["provider"]) == ("beta/strong-2", "beta")
    assert end.provenance["route"] == "route/strong"
    assert end.provenance["fell_back_from"] == ["alpha/strong-1"]
    assert lan["gamma"].requests == []
    records = OutsideRequest.objects.order_by("id")
    assert [(r.provider.name, r.outcome) for r in records] == [
        ("alpha", outcome),
        ("beta", "answered"),
    ]
    assert len({r.request_id for r in records}) == 1  # one question: the wallet's purposes agree
    assert [e.provider for e in Egress.objects.order_by("id")] == ["alpha", "beta"]


@pytest.mark.django_db(transaction=True)
def test_fallback_after_a_paid_failure_never_pays_that_provider_again_for_the_question(
    lan: dict[str, OpenAIShapedDouble],
    added: None,
    member: Any,
    provider_node: LightningdDouble,
    household_node: LightningdDouble,
) -> None:
    # Each token answers one request: the route's second try at the provider meets a new 402.
    with L402Double(provider_node, price_msat=20_000, requests_per_token=1) as aperture:
        services.provider_add(aperture.url, kind="l402", name="aperture")
        route = ["aperture/strong-1", "aperture/strong-2", "alpha/strong-1"]
        routing.route_set("strong", "fallback", route)
        aperture.switches["status_500"] = True  # paid, then broken

        text, end = _ask(member, "route/strong")

    assert text == "alpha answers: what is a sat"
    assert isinstance(end, Done) and end.provenance["cost_msat"] == 0
    assert end.provenance["fell_back_from"] == ["aperture/strong-1", "aperture/strong-2"]
    [payment] = Payment.objects.all()
    assert (payment.state, payment.amount_msat) == ("complete", 20_000)
    assert aperture.challenges == 2  # asked twice to be paid, paid once
    records = OutsideRequest.objects.order_by("id")
    assert [(r.model_id, r.outcome, r.cost_msat) for r in records] == [
        ("strong-1", "failed", payment.amount_msat + (payment.fee_msat or 0)),
        ("strong-2", "failed", 0),  # paid already for this question: not paid again
        ("strong-1", "answered", 0),
    ]


@pytest.mark.django_db(transaction=True)
def test_when_every_model_fails_the_refusal_names_each(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    routing.route_set("strong", "fallback", ["alpha/strong-1", "beta/strong-1"])
    lan["alpha"].switches["status_500"] = True
    lan["beta"].switches["html"] = True

    text, end = _ask(member, "route/strong")

    assert text == "" and isinstance(end, Failed)
    assert end.code == RefusalCode.PROVIDER_FAILED
    assert "alpha/strong-1: The provider answered 500" in end.message
    assert "beta/strong-1: The provider answered with text/html" in end.message


@pytest.mark.django_db(transaction=True)
def test_a_model_over_the_members_allowance_is_passed_over_for_a_free_one_and_nothing_paid(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    _paid_provider("paid", request_msat=7_000)
    budgets.budget_set("member", "day", 5_000, member=member)
    routing.route_set("strong", "fallback", ["paid/big", "beta/strong-1"])

    text, end = _ask(member, "route/strong")

    assert isinstance(end, Done) and end.provenance["fell_back_from"] == ["paid/big"]
    assert text.startswith("beta answers") and len(lan["beta"].requests) == 1
    assert not Payment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_when_every_model_is_over_the_allowance_the_refusal_says_so(
    added: None, member: Any
) -> None:
    _paid_provider("paid", request_msat=7_000)
    _paid_provider("dear", request_msat=9_000)
    budgets.budget_set("member", "day", 5_000, member=member)
    routing.route_set("strong", "fallback", ["paid/big", "dear/big"])

    _, end = _ask(member, "route/strong")

    assert isinstance(end, Failed) and end.code == RefusalCode.OVER_BUDGET
    assert not Payment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_provider_with_a_bad_recent_record_is_tried_last(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    routing.route_set("strong", "fallback", ["alpha/strong-1", "beta/strong-1", "gamma/strong-1"])
    _records("alpha", "answered", 2)
    _records("alpha", "timeout", 2)
    _records("alpha", "failed", 1)  # 3 of its last 5 went wrong

    text, end = _ask(member, "route/strong")

    assert text == "beta answers: what is a sat"
    assert isinstance(end, Done) and end.provenance["fell_back_from"] == []
    assert lan["alpha"].requests == []
    asked = pipeline.AnswerRequest(member, pipeline.Origin.API, "route/strong", [], SAMPLING)
    assert pipeline.route_of(asked).provenance["model"] == "beta/strong-1"  # first, now
    assert routing.reliability_order(["alpha/strong-1", "beta/strong-1", "gamma/strong-1"]) == (
        ["beta/strong-1", "gamma/strong-1", "alpha/strong-1"],
        {"alpha/strong-1"},
    )


@pytest.mark.django_db(transaction=True)
def test_a_record_is_judged_on_the_last_five_requests_of_the_past_hour(added: None) -> None:
    _records("alpha", "failed", 3, ago=timedelta(hours=2))
    _records("beta", "failed", 3)
    _records("beta", "answered", 3)  # later: its last five hold two failures
    _records("gamma", "failed", 2)
    _records("gamma", "over_budget", 3)  # the household's budgets, not the provider's doing

    assert not routing.provider_unreliable("alpha")
    assert not routing.provider_unreliable("beta")
    assert not routing.provider_unreliable("gamma")
    _records("gamma", "invoice_refused", 1)
    assert routing.provider_unreliable("gamma")


# Spread ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_spread_sends_three_new_conversations_to_three_providers_and_each_stays(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    routing.route_set("private", "spread", ["alpha/strong-1", "beta/strong-1", "gamma/strong-1"])

    first = [_ask(member, "route/private", "hello", conversation=f"c{n}")[0] for n in (1, 2, 3)]
    again = _ask(member, "route/private", "and then", conversation="c2")[0]

    assert first == ["alpha answers: hello", "beta answers: hello", "gamma answers: hello"]
    assert again == "beta answers: and then"
    assert [len(lan[name].requests) for name in NAMES] == [1, 2, 1]


@pytest.mark.django_db(transaction=True)
def test_spread_counts_each_api_request_as_a_new_conversation_and_each_member_apart(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any, owner: Any
) -> None:
    routing.route_set("private", "spread", ["alpha/strong-1", "beta/strong-1"])

    answered = [_ask(member, "route/private", "hi")[0] for _ in range(3)]
    owners = _ask(owner, "route/private", "hi")[0]

    assert answered == ["alpha answers: hi", "beta answers: hi", "alpha answers: hi"]
    assert owners == "alpha answers: hi"


@pytest.mark.django_db(transaction=True)
def test_spread_falls_back_when_its_choice_fails_and_the_conversation_stays_where_answered(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    routing.route_set("private", "spread", ["alpha/strong-1", "beta/strong-1", "gamma/strong-1"])
    lan["alpha"].switches["status_500"] = True

    text, end = _ask(member, "route/private", "hello", conversation="c1")
    lan["alpha"].switches.clear()
    again = _ask(member, "route/private", "and then", conversation="c1")[0]

    assert text == "beta answers: hello"
    assert isinstance(end, Done) and end.provenance["fell_back_from"] == ["alpha/strong-1"]
    assert again == "beta answers: and then"
    assert RouteChoice.objects.get().model == "beta/strong-1"


@pytest.mark.django_db(transaction=True)
def test_spread_gives_a_new_conversation_to_an_unreliable_provider_only_after_the_others(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    routing.route_set("private", "spread", ["alpha/strong-1", "beta/strong-1"])
    _records("alpha", "timeout", 3)

    answered = [_ask(member, "route/private", "hi", conversation=f"c{n}")[0] for n in (1, 2)]

    assert answered == ["beta answers: hi", "beta answers: hi"]
    assert lan["alpha"].requests == []
