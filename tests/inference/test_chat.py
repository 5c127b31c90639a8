"""The dashboard's chat in-process: who may use it, what it refuses, what it keeps and for how long.

Answers themselves come from the real engine in test_chat_browser.py; here the engine is not
running, which is also how the refusal for a stopped engine is tested.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.inference import conversations
from apps.inference.conversations import ChatError
from apps.inference.models import ChatMessage, ChatPreferences, Conversation, LocalModel
from apps.inference.tasks import chat_retention_sweep
from tests.inference.conftest import MODEL


def ask(client: Client, **body: Any) -> Any:
    return client.post("/chat/ask", json.dumps(body), content_type="application/json")


def stored() -> tuple[int, int]:
    return Conversation.objects.count(), ChatMessage.objects.count()


def test_the_chat_is_for_the_household(
    member_client: Client, friend_client: Client, model: LocalModel
) -> None:
    page = member_client.get("/chat/")

    assert page.status_code == 200
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert f'<option value="{MODEL}" selected>' in page.content.decode()
    assert friend_client.get("/chat/").status_code == 403
    assert ask(friend_client, model=MODEL, question="hi").status_code == 403
    assert Client().get("/chat/").status_code == 302


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "", "question": "hi"}, "Choose a model"),
        ({"model": MODEL, "question": "   "}, "Write a question"),
        ({"model": MODEL, "question": "x" * 32_001}, "at most 32,000"),
        ({"model": MODEL, "question": "hi", "conversation": 999}, "no such conversation"),
        ({"model": MODEL, "question": "hi", "private": True, "history": [{"role": "x"}]}, "role"),
    ],
)
def test_bad_questions_are_refused_and_nothing_is_stored(
    member_client: Client, model: LocalModel, body: dict[str, Any], says: str
) -> None:
    answer = ask(member_client, **body)

    assert answer.status_code == 400
    assert says in answer.json()["error"]
    assert stored() == (0, 0)


def test_a_model_that_does_not_exist_is_not_found_and_nothing_is_stored(
    member_client: Client, model: LocalModel
) -> None:
    answer = ask(member_client, model="nope", question="hi")

    assert answer.status_code == 404
    assert "does not exist" in answer.json()["error"]
    assert stored() == (0, 0)


def test_a_body_that_is_not_json_is_refused(member_client: Client, model: LocalModel) -> None:
    answer = member_client.post("/chat/ask", "{", content_type="application/json")
    assert answer.status_code == 400


def test_with_the_engine_stopped_the_question_is_refused_and_not_stored(
    member_client: Client, model: LocalModel
) -> None:
    answer = ask(member_client, model=MODEL, question="Are you there?")

    assert answer.status_code == 503
    assert "engine is not running" in answer.json()["error"]
    assert stored() == (0, 0)


def test_another_members_conversation_is_out_of_reach(
    owner: Any, member_client: Client, model: LocalModel
) -> None:
    theirs = conversations.conversation_start(owner, "The owner's own question")

    assert member_client.get(f"/chat/{theirs.pk}/").status_code == 404
    assert ask(member_client, model=MODEL, question="hi", conversation=theirs.pk).status_code == 400
    member_client.post(f"/chat/{theirs.pk}/delete")
    assert Conversation.objects.filter(pk=theirs.pk).exists()


def test_a_stored_answer_shows_which_file_and_sampling_made_it(
    member: Any, member_client: Client, model: LocalModel
) -> None:
    conversation = conversations.conversation_start(member, "What is 2+2?")
    conversations.question_save(conversation, "What is 2+2?")
    sampling = {"temperature": 0.7, "top_p": 0.95, "seed": 42, "max_tokens": 512}
    provenance = {"model": MODEL, "model_sha256": "b" * 64, "sampling": sampling}
    conversations.answer_save(conversation, "**Four**", provenance, "stop")

    page = member_client.get(f"/chat/{conversation.pk}/").content.decode()

    assert "<strong>Four</strong>" in page
    assert f'title="sha256 {"b" * 64}"' in page
    assert "temperature 0.7 · top_p 0.95 · seed 42 · max_tokens 512" in page


def test_retention_deletes_old_conversations_and_only_the_members_own(
    owner: Any, member: Any, member_client: Client
) -> None:
    now = timezone.now()
    ages = {"old": 8, "recent": 6}
    for title, days in ages.items():
        conversation = conversations.conversation_start(member, title)
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=now - timedelta(days))
    owners = conversations.conversation_start(owner, "kept forever")
    Conversation.objects.filter(pk=owners.pk).update(updated_at=now - timedelta(days=400))

    conversations.retention_set(member, "7")

    assert ChatPreferences.objects.get(member=member).retention_days == 7
    assert set(Conversation.objects.values_list("title", flat=True)) == {"recent", "kept forever"}
    Conversation.objects.filter(title="recent").update(updated_at=now - timedelta(days=7, hours=1))
    chat_retention_sweep()
    assert set(Conversation.objects.values_list("title", flat=True)) == {"kept forever"}


@pytest.mark.parametrize("days", ["3", "-1", "forever", "", "²", None])
def test_a_retention_not_offered_is_refused_and_changes_nothing(member: Any, days: Any) -> None:
    conversations.retention_set(member, 30)

    with pytest.raises(ChatError, match="Choose how long to keep"):
        conversations.retention_set(member, days)

    assert ChatPreferences.objects.get(member=member).retention_days == 30


def test_a_model_added_later_does_not_become_the_default(
    member_client: Client, model: LocalModel
) -> None:
    LocalModel.objects.create(
        name="aaa-newer", file_name="aaa.gguf", size=1, sha256="b" * 64, architecture="llama",
        parameters=1, quantization="Q8_0", source=LocalModel.Source.URL,
    )  # fmt: skip

    page = member_client.get("/chat/").content.decode()

    assert f'<option value="{MODEL}" selected>' in page
    assert '<option value="aaa-newer">' in page


def stopped(client: Client, **body: Any) -> Any:
    return client.post("/chat/stopped", json.dumps(body), content_type="application/json")


def test_a_stopped_answer_keeps_only_what_the_page_showed(
    member: Any, owner: Any, member_client: Client, owner_client: Client
) -> None:
    conversation = conversations.conversation_start(member, "Tell me a story")
    conversations.question_save(conversation, "Tell me a story")
    assert stopped(member_client, conversation=conversation.pk, shown="Once").status_code == 409
    provenance = {"model": MODEL, "model_sha256": "b" * 64, "sampling": {}}
    conversations.answer_save(conversation, "Once upon a time", provenance, "cancelled")

    assert stopped(owner_client, conversation=conversation.pk, shown="Once").status_code == 400
    assert stopped(member_client, conversation=conversation.pk, shown="Twice").status_code == 400
    assert stopped(member_client, conversation=conversation.pk, shown="Once").status_code == 200

    answer = conversation.messages.get(role="assistant")
    assert answer.content == "Once"
    longer = stopped(member_client, conversation=conversation.pk, shown="Once upon")
    assert longer.status_code == 400  # never lengthened
    assert conversation.messages.get(role="assistant").content == "Once"


def test_a_question_over_the_size_limit_is_refused_saying_so(
    member_client: Client, model: LocalModel, settings: Any
) -> None:
    settings.ENGINE_REQUEST_BYTES = 10_000

    refused = ask(member_client, model=MODEL, question="é" * 20_000)

    assert refused.status_code == 400
    assert "at most 10000 bytes" in refused.json()["error"]
    assert stored() == (0, 0)
