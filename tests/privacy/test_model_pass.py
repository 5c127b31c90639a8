"""The local model's pass: with the owner's word, a local model reads each outside request before
it leaves, and every name and place it finds in the text is taken out too. The local model is
the real engine on the bundled SmolLM2 file, in this process; the provider is an OpenAI-shaped
double on loopback. A 135M model's judgement is not what is tested: whatever it names that the
text holds never reaches the provider, and a pass that cannot finish sends nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from apps.audit.models import AuditEvent
from apps.inference import pipeline
from apps.inference.backends.base import AnswerRefused, Done, RefusalCode
from apps.inference.backends.engine import socket_path
from apps.inference.models import LocalModel
from apps.privacy import model_pass, policy
from apps.privacy.detectors import Kind
from apps.privacy.models import Egress, PrivacySettings
from apps.providers.models import Provider
from tests.inference.conftest import MODEL, RecordingDecoder, bundled_local_model, serving_engine
from tests.privacy.household import MODEL as OUTSIDE
from tests.privacy.household import SAMPLING
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db(transaction=True)
CONTEXT = 1024  # the pass's instructions, the text and its answer
EVERY_KIND = [kind.value for kind in Kind]
QUESTION = "Tell Zorbalina I said hi. She moved to Quibbleton with Marek last spring."


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingDecoder]:
    with serving_engine(CONTEXT, slots=2) as decoder:
        yield decoder


@pytest.fixture
def local(owner: Any, settings: Any) -> LocalModel:
    """The bundled model in the catalog (the engine is started by the tests that need it)."""
    settings.ENGINE_CONTEXT_PER_SLOT = CONTEXT
    return bundled_local_model()


@pytest.fixture
def running(
    engine: RecordingDecoder, local: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> RecordingDecoder:
    # Other tests share this machine's two cores: its answer may take longer than it would.
    monkeypatch.setattr(model_pass, "TIMEOUT_SECONDS", 120.0)
    engine.received.clear()
    return engine


def pass_on(owner: Any, model: str = "") -> None:
    policy.settings_update(
        actor=owner,
        detectors=EVERY_KIND,
        retention_days=90,
        model_pass=True,
        model_pass_model=model,
    )


def request_for(member: Any, content: str = QUESTION) -> pipeline.AnswerRequest:
    messages = [{"role": "user", "content": content}]
    return pipeline.AnswerRequest(member, pipeline.Origin.API, OUTSIDE, messages, SAMPLING)


def asked(member: Any, content: str = QUESTION) -> tuple[str, Done | Any]:
    return pipeline.answer_sync(request_for(member, content))


def names_in(member: Any, content: str = QUESTION) -> frozenset[str]:
    return async_to_sync(model_pass.names_found)([content], MODEL, member)


def received_text(double: OpenAIShapedDouble) -> str:
    return json.dumps(double.requests, ensure_ascii=False).casefold()


# First in the module: the engine starts with the first test that asks for it. ---------------


def test_with_the_pass_on_and_no_engine_running_nothing_is_sent(
    owner: Any, member: Any, local: LocalModel, outside: OpenAIShapedDouble
) -> None:
    assert not socket_path().exists()
    pass_on(owner)

    text, end = asked(member)

    assert text == "" and end.code == RefusalCode.ENGINE_STOPPED
    assert end.message.startswith(model_pass.NOT_FINISHED)
    assert outside.requests == [] and not Egress.objects.exists()


def test_with_the_pass_on_and_no_local_model_nothing_is_sent(
    owner: Any, member: Any, outside: OpenAIShapedDouble
) -> None:
    PrivacySettings.objects.update_or_create(pk=1, defaults={"model_pass": True})
    assert policy.policy_now().model_pass == ""

    with pytest.raises(AnswerRefused) as refused:
        async_to_sync(pipeline.answer)(request_for(member))

    assert refused.value.code == RefusalCode.ENGINE_STOPPED
    assert str(refused.value) == f"{model_pass.NOT_FINISHED} There is no local model on this node."
    assert outside.requests == [] and not Egress.objects.exists()


# What the model's answer may add ---------------------------------------------------------------


def test_only_what_occurs_in_the_text_is_kept_and_never_a_placeholder() -> None:
    texts = ["Tell Zorbalina I said hi, from [NAME_1].", "We met in Quibbleton's old town."]
    listed = [
        "Zorbalina",
        "zorbalina",  # the same, in another case
        "Quibbleton",  # found with its possessive
        "Zorbal",  # only part of a word
        "Atlantis",  # not in the text
        "[NAME_1]",
        "NAME_1",  # a placeholder's label, though the text holds it
        "Z",
        "!!",
        "  old   town ",
    ]

    assert model_pass.kept(listed, texts) == {"Zorbalina", "Quibbleton", "old town"}


def test_at_most_fifty_are_kept() -> None:
    names = [f"Name{chr(97 + n // 26)}{chr(97 + n % 26)}" for n in range(80)]

    kept = model_pass.kept(names, [" ".join(names)])

    assert len(kept) == model_pass.MAX_FOUND == 50
    assert kept == set(names[:50])


# Off by default ---------------------------------------------------------------------------------


def test_it_is_off_by_default_and_no_local_model_is_asked(
    member: Any, running: RecordingDecoder, outside: OpenAIShapedDouble
) -> None:
    assert PrivacySettings.objects.get_or_create(pk=1)[0].model_pass is False
    assert policy.policy_now().model_pass is None
    prepared = pipeline._route_prepared(request_for(member))  # one trip to the database thread
    assert not isinstance(prepared, pipeline.NamesPass)

    text, end = asked(member)

    assert isinstance(end, Done)
    assert running.received == []
    assert "zorbalina" in received_text(outside)  # no pattern knows the name


# On ----------------------------------------------------------------------------------------------


def test_what_the_local_model_names_never_reaches_the_provider_and_comes_back(
    owner: Any,
    member: Any,
    running: RecordingDecoder,
    outside: OpenAIShapedDouble,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pass_on(owner)
    found = names_in(member)
    assert found, "the model named nothing that the text holds"
    running.received.clear()

    text, end = asked(member)

    assert isinstance(end, Done)
    (read,) = running.received  # the local model read the request first
    assert read[0]["content"] == model_pass.INSTRUCTIONS and read[-1]["content"] == QUESTION
    sent = received_text(outside)
    assert not [name for name in found if name.casefold() in sent]
    assert "[term_1]" in sent
    assert all(name in text for name in found)  # the double echoes: restored for the member
    (row,) = Egress.objects.all()
    assert row.found == {"term": len(found)}
    assert end.provenance["redacted"] == {"term": len(found)}
    logged = caplog.text.casefold()
    assert not [word for word in ("zorbalina", "quibbleton", "marek") if word in logged]


def test_its_names_are_taken_out_even_with_the_household_words_turned_off(
    owner: Any, member: Any, running: RecordingDecoder, outside: OpenAIShapedDouble
) -> None:
    policy.terms_add(["sourdough"], actor="test")
    policy.settings_update(
        actor=owner,
        detectors=[kind for kind in EVERY_KIND if kind != Kind.TERM],
        retention_days=90,
        model_pass=True,
    )
    question = f"{QUESTION} We baked sourdough."
    found = names_in(member, question)
    assert found and "sourdough" not in found

    asked(member, question)

    sent = received_text(outside)
    assert not [name for name in found if name.casefold() in sent]
    assert "sourdough" in sent  # the owner's list stays off


def test_a_trusted_provider_is_not_read_first(
    owner: Any, member: Any, running: RecordingDecoder, outside: OpenAIShapedDouble
) -> None:
    Provider.objects.filter(name="lan").update(trusted=True)
    pass_on(owner)

    asked(member)

    assert running.received == []
    assert "zorbalina" in received_text(outside)


def test_a_pass_that_takes_too_long_refuses_and_nothing_is_sent(
    owner: Any,
    member: Any,
    running: RecordingDecoder,
    outside: OpenAIShapedDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pass_on(owner)
    monkeypatch.setattr(model_pass, "TIMEOUT_SECONDS", 0.001)

    text, end = asked(member)

    assert text == "" and end.code == RefusalCode.ENGINE_STOPPED
    assert end.message == f"{model_pass.NOT_FINISHED} It took too long."
    assert outside.requests == [] and not Egress.objects.exists()


def test_the_preview_shows_what_the_pass_takes_out_and_the_turn_sends_the_same(
    owner: Any,
    member: Any,
    member_client: Client,
    running: RecordingDecoder,
    outside: OpenAIShapedDouble,
) -> None:
    pass_on(owner)
    found = names_in(member)
    body = {"model": OUTSIDE, "question": QUESTION, "price_msat": 0}

    response = member_client.post("/chat/preview", body, content_type="application/json")

    shown = response.json()
    assert response.status_code == 200, shown
    assert shown["found"] == {"term": len(found)}
    assert not [name for name in found if name in shown["messages"][-1]["content"]]
    assert outside.requests == [] and not Egress.objects.exists()
    member_client.post("/chat/ask", body, content_type="application/json")
    assert outside.requests[0]["messages"] == shown["messages"]


# The owner's setting ---------------------------------------------------------------------------


def test_the_owner_turns_the_pass_on_with_a_model_on_the_privacy_page(
    owner: Any, owner_client: Client, local: LocalModel
) -> None:
    page = owner_client.get("/privacy/").content.decode()
    assert 'id="model_pass" aria-describedby="model_pass-hint">' in page  # not ticked
    assert f'<option value="{MODEL}">' in page

    form = {"detectors": EVERY_KIND, "retention_days": "90", "model_pass": "on"}
    response = owner_client.post("/privacy/settings", {**form, "model_pass_model": MODEL})

    assert response.status_code == 302
    chosen = policy.privacy_settings()
    assert (chosen.model_pass, chosen.model_pass_model) == (True, MODEL)
    assert policy.policy_now().model_pass == MODEL
    event = AuditEvent.objects.get(action="privacy_settings_changed")
    assert event.detail.endswith(f"; local model's pass on ({MODEL})")
    page = owner_client.get("/privacy/").content.decode()
    assert 'id="model_pass" aria-describedby="model_pass-hint" checked' in page
    assert f'<option value="{MODEL}" selected>' in page


def test_blank_means_the_first_local_model_by_name_and_off_is_audited(
    owner: Any, owner_client: Client, local: LocalModel
) -> None:
    LocalModel.objects.create(
        name="aaa-first", file_name="aaa.gguf", size=1, sha256="b" * 64, architecture="llama",
        parameters=1, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip
    pass_on(owner)
    assert policy.policy_now().model_pass == "aaa-first"

    owner_client.post("/privacy/settings", {"detectors": EVERY_KIND, "retention_days": "90"})

    assert policy.policy_now().model_pass is None
    last = AuditEvent.objects.filter(action="privacy_settings_changed").order_by("-id").first()
    assert last is not None and last.detail.endswith("; local model's pass off")


def test_a_model_that_is_not_on_the_node_is_refused_and_nothing_changes(
    owner: Any, owner_client: Client, local: LocalModel
) -> None:
    form = {"detectors": EVERY_KIND, "retention_days": "90", "model_pass": "on"}

    response = owner_client.post("/privacy/settings", {**form, "model_pass_model": "nope"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "There is no local model by that name" in page
    assert 'id="model_pass" aria-describedby="model_pass-hint" checked' in page
    assert policy.privacy_settings().model_pass is False
    assert not AuditEvent.objects.filter(action="privacy_settings_changed").exists()


def test_a_member_is_not_shown_the_setting_nor_may_change_it(
    member: Any, member_client: Client, local: LocalModel
) -> None:
    assert 'name="model_pass"' not in member_client.get("/privacy/").content.decode()

    form = {"detectors": EVERY_KIND, "retention_days": "90", "model_pass": "on"}
    response = member_client.post("/privacy/settings", form)

    assert response.status_code == 403
    assert policy.privacy_settings().model_pass is False
