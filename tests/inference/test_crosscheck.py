"""Cross-check: one question to two to four models at once, each answer whole with who gave it,
and the local model's note on where they agree and differ. Outside models are OpenAI-shaped
servers on loopback (the home-network kind: nothing is paid); the local one is the real engine
on the bundled SmolLM2 file, in this process (a 256-token context)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import Done, Failed, RefusalCode
from apps.inference.crosscheck import CrossCheck, CrossCheckError, cross_check, cross_check_json
from apps.inference.models import LocalModel
from apps.providers.models import OutsideRequest
from tests.inference.conftest import CONTEXT, MODEL, RecordingDecoder, bundled_local_model
from tests.providers.doubles.openai_shape import OpenAIShapedDouble
from tests.providers.lan import NAMES

SAMPLING = Sampling(max_tokens=12, temperature=0.0, top_p=1.0, seed=7)


@pytest.fixture
def local(transactional_db: None, engine: RecordingDecoder, settings: Any) -> LocalModel:
    settings.ENGINE_CONTEXT_PER_SLOT = CONTEXT
    engine.received.clear()
    return bundled_local_model()


def check(member: Any, models: list[str], question: str = "what is a sat") -> CrossCheck:
    messages = [{"role": "user", "content": question}]

    async def asked() -> CrossCheck:
        return await cross_check(member, messages, models, SAMPLING, origin=pipeline.Origin.CHAT)

    return async_to_sync(asked)()


@pytest.mark.parametrize(
    ("models", "error"),
    [
        (["alpha/strong-1"], "2 to 4 models, not 1"),
        ([f"{name}/strong-{n}" for name in NAMES for n in (1, 2)][:5], "2 to 4 models, not 5"),
        (["alpha/strong-1", "beta/strong-1", "alpha/strong-1"], "each model once"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_fewer_than_two_more_than_four_or_a_repeated_model_is_refused_before_asking(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any, models: list[str], error: str
) -> None:
    with pytest.raises(CrossCheckError, match=error):
        check(member, models)

    assert all(double.requests == [] for double in lan.values())
    assert not OutsideRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_reaches_exactly_the_providers_named_and_each_answer_names_who_gave_it(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    result = check(member, ["beta/strong-2", "alpha/strong-1"])

    assert [(a.model, a.text) for a in result.answers] == [
        ("beta/strong-2", "beta answers: what is a sat"),
        ("alpha/strong-1", "alpha answers: what is a sat"),
    ]
    assert [(a.provider, a.answered_by) for a in result.answers] == [
        ("beta", "beta/strong-2"),
        ("alpha", "alpha/strong-1"),
    ]
    assert [len(lan[name].requests) for name in NAMES] == [1, 1, 0]
    ids = {record.request_id for record in OutsideRequest.objects.all()}
    assert len(ids) == 2  # two questions, each paid (if paid) on its own
    assert result.note == "The note could not be written: this node has no local model to write it."


@pytest.mark.django_db(transaction=True)
def test_a_model_that_fails_is_shown_failed_beside_the_others(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any
) -> None:
    lan["gamma"].switches["status_500"] = True

    result = check(member, ["alpha/strong-1", "gamma/strong-1", "nowhere/strong-1"])
    shown = cross_check_json(result)

    alpha, gamma, nowhere = result.answers
    assert alpha.answered and alpha.text == "alpha answers: what is a sat"
    assert isinstance(gamma.end, Failed) and gamma.end.code == RefusalCode.PROVIDER_FAILED
    assert isinstance(nowhere.end, Failed) and nowhere.end.code == RefusalCode.MODEL_NOT_FOUND
    assert result.note.startswith("The note could not be written: fewer than two models answered")
    assert json.loads(json.dumps(shown)) == shown
    assert [answer["end"]["event"] for answer in shown["answers"]] == ["done", "error", "error"]
    assert shown["answers"][0]["provenance"]["provider"] == "alpha"
    assert shown["answers"][1]["end"]["code"] == "provider_failed"


def test_the_local_model_answers_beside_an_outside_one_and_writes_the_note(
    lan: dict[str, OpenAIShapedDouble], added: None, member: Any, local: LocalModel,
    engine: RecordingDecoder,
) -> None:  # fmt: skip
    result = check(member, [MODEL, "alpha/strong-1"], "Name a colour.")

    mine, alpha = result.answers
    assert isinstance(mine.end, Done) and mine.text.strip()
    assert (mine.provider, mine.answered_by) == ("sovereign", MODEL)
    assert mine.end.provenance["model_sha256"] == "a" * 64
    assert alpha.text == "alpha answers: Name a colour." and alpha.provider == "alpha"
    assert result.note and not result.note.startswith("The note could not be written")
    # The note's prompt, as the engine received it, quotes both answers after the question.
    note_prompt = engine.received[-1][-1]["content"]
    assert note_prompt.startswith("Question: Name a colour.")
    assert f"Answer 1 ({MODEL}):\n{mine.text.strip()}" in note_prompt
    assert "Answer 2 (alpha/strong-1):\nalpha answers: Name a colour." in note_prompt
    assert [len(lan[name].requests) for name in NAMES] == [1, 0, 0]
