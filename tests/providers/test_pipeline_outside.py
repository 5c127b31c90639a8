"""The one answer pipeline reaching an outside model: named `<provider>/<model id>`, streamed
back as typed events, with the provider's record and the egress record written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import AnswerRefused, Done, Failed, RefusalCode
from apps.privacy.models import Egress
from apps.providers import services
from apps.providers.models import OutsideRequest
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

SAMPLING = Sampling(max_tokens=32, temperature=0.0, top_p=1.0, seed=7)


@pytest.fixture
def lan() -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        yield double


@pytest.fixture
def added(lan: OpenAIShapedDouble, owner: Any) -> Any:
    return services.provider_add(lan.url + "/v1/", kind="openai", name="lan", api_key="sk-lan")


def _ask(member: Any, model: str, question: str = "what is a sat") -> tuple[str, Done | Failed]:
    request = pipeline.AnswerRequest(
        member, pipeline.Origin.API, model, [{"role": "user", "content": question}], SAMPLING
    )
    return pipeline.answer_sync(request)


@pytest.mark.django_db(transaction=True)
def test_an_outside_model_answers_through_the_pipeline_and_leaves_its_records(
    lan: OpenAIShapedDouble, added: Any, member: Any
) -> None:
    text, end = _ask(member, "lan/strong-1")
    assert text == "double answers: what is a sat"
    assert isinstance(end, Done) and end.provenance["model"] == "lan/strong-1"
    assert end.provenance["provider"] == "lan" and end.provenance["cost_msat"] == 0
    assert lan.requests[0]["model"] == "strong-1" and lan.requests[0]["stream"] is True
    record = OutsideRequest.objects.get()
    assert (record.outcome, record.member_id) == ("answered", member.pk)
    assert record.completion_tokens == len(text.split())
    egress = Egress.objects.get()
    assert json.loads(egress.body) == lan.requests[0]
    assert (egress.provider, egress.model, egress.outcome) == ("lan", "lan/strong-1", "answered")


@pytest.mark.django_db(transaction=True)
def test_a_stream_cut_midway_fails_and_is_recorded_against_the_provider(
    lan: OpenAIShapedDouble, added: Any, member: Any
) -> None:
    lan.switches["cut_stream"] = True
    text, end = _ask(member, "lan/strong-1", "one two three four five")
    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert text == "double answers:"
    assert OutsideRequest.objects.get().outcome == "failed"


@pytest.mark.parametrize("switch", ["status_500", "garbage", "html"])
@pytest.mark.django_db(transaction=True)
def test_a_broken_provider_is_a_clear_refusal(
    lan: OpenAIShapedDouble, added: Any, member: Any, switch: str
) -> None:
    lan.switches[switch] = True
    text, end = _ask(member, "lan/strong-1")
    assert isinstance(end, Failed) and end.code == RefusalCode.PROVIDER_FAILED
    assert text == ""
    assert OutsideRequest.objects.get().outcome == "failed"


@pytest.mark.django_db
def test_an_unknown_model_is_not_found_and_a_friend_asking_outside_is_not_shared(
    added: Any, member: Any, friend: Any
) -> None:
    for model in ("lan/nothing", "nowhere/strong-1"):
        request = pipeline.AnswerRequest(member, pipeline.Origin.API, model, [], SAMPLING)
        with pytest.raises(AnswerRefused) as refused:
            pipeline.route_of(request)
        assert refused.value.code == RefusalCode.MODEL_NOT_FOUND
    for model in ("lan/nothing", "lan/strong-1"):
        request = pipeline.AnswerRequest(friend, pipeline.Origin.API, model, [], SAMPLING)
        with pytest.raises(AnswerRefused) as refused:
            pipeline.route_of(request)
        assert refused.value.code == RefusalCode.MODEL_NOT_SHARED


@pytest.mark.django_db(transaction=True)
def test_an_answer_the_member_stops_is_recorded_as_stopped_not_against_the_provider(
    lan: OpenAIShapedDouble, added: Any, member: Any
) -> None:
    async def first_token_then_stop() -> None:
        request = pipeline.AnswerRequest(
            member,
            pipeline.Origin.CHAT,
            "lan/strong-1",
            [{"role": "user", "content": "hi"}],
            SAMPLING,
        )
        events = await pipeline.answer(request)
        await anext(events)
        await events.aclose()

    async_to_sync(first_token_then_stop)()
    assert OutsideRequest.objects.get().outcome == "stopped"


@pytest.mark.django_db(transaction=True)
def test_an_answer_dropped_before_its_first_token_is_read_is_still_recorded(
    lan: OpenAIShapedDouble, added: Any, member: Any
) -> None:
    async def open_then_drop() -> None:
        request = pipeline.AnswerRequest(
            member,
            pipeline.Origin.API,
            "lan/strong-1",
            [{"role": "user", "content": "hi"}],
            SAMPLING,
        )
        events = await pipeline.answer(request)
        await events.aclose()  # as a client that left before the answer was streamed to it

    async_to_sync(open_then_drop)()
    assert OutsideRequest.objects.get().outcome == "stopped"
    assert Egress.objects.get().outcome == "stopped"
