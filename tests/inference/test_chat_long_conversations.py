"""Conversations longer than the model's context, in the dashboard's chat with a real engine.

The engine runs in this process (its decoder on the bundled SmolLM2 file, a 256-token
context) and records what each request sent it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from django.utils import timezone

from apps.identity.services import apikey_create
from apps.inference import conversations
from apps.inference.conversations import ChatError
from apps.inference.models import ChatMessage, ChatPreferences, Conversation, LocalModel
from tests.inference.conftest import CONTEXT, RecordingDecoder, bundled_local_model

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def model(db: None, engine: RecordingDecoder, settings: Any) -> LocalModel:
    settings.ENGINE_CONTEXT_PER_SLOT = CONTEXT
    settings.ENGINE_DEFAULT_MAX_TOKENS = 16  # short answers: the test is about the prompt
    engine.received.clear()
    return bundled_local_model()


def long_conversation(member: Any, exchanges: int = 14) -> Conversation:
    """A stored conversation about three times the 256-token context."""
    conversation = conversations.conversation_start(member, "Facts")
    provenance = {"model": MODEL, "model_sha256": "a" * 64, "sampling": {}}
    for turn in range(exchanges):
        conversations.question_save(conversation, f"Tell me a fact about the number {turn}.")
        fact = f"The number {turn} comes after {turn - 1} and before {turn + 1}. " * 3
        conversations.answer_save(conversation, fact, provenance, "stop")
    return conversation


def ask(client: Client, conversation: Conversation, question: str) -> list[dict[str, Any]]:
    """The chat's events for one question, read in the event loop that asked it."""
    body = {"model": MODEL, "question": question, "conversation": conversation.pk}

    async def exchange() -> bytes:
        asking = AsyncClient()
        asking.cookies = client.cookies  # the member's session
        response = await asking.post("/chat/ask", body, content_type="application/json")
        assert response.status_code == 200, response.content
        return b"".join([chunk async for chunk in response.streaming_content])

    # In this thread, as a request is served: the view's queries see the test's transaction.
    return [json.loads(line) for line in async_to_sync(exchange)().splitlines()]


def done_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(event for event in events if event["event"] == "done")


def test_a_conversation_three_times_the_context_keeps_answering_and_says_what_it_left_out(
    member: Any, member_client: Client, model: LocalModel, engine: RecordingDecoder
) -> None:
    conversation = long_conversation(member)
    history = conversations.history(conversation)

    answers = [done_of(ask(member_client, conversation, f"What is {n} plus one?")) for n in (1, 2)]

    left_out = [
        answer.messages_left_out for answer in conversation.messages.filter(role="assistant")
    ][-2:]
    assert all(n > 0 and n % 2 == 0 for n in left_out)  # the oldest, in whole exchanges
    assert answers[0]["context_note"] == (
        f"The {left_out[0]} oldest messages no longer fit the model's context; "
        "this answer did not see them."
    )
    assert engine.received[0] == [*history, {"role": "user", "content": "What is 1 plus one?"}]
    page = member_client.get(f"/chat/{conversation.pk}/").content.decode()
    assert f"The {left_out[1]} oldest messages no longer fit" in page  # on reload too
    assert Conversation.objects.get(pk=conversation.pk).summary == ""  # not asked for


def test_with_summaries_chosen_the_left_out_messages_become_a_note_the_next_turn_reads(
    member: Any, member_client: Client, model: LocalModel, engine: RecordingDecoder
) -> None:
    conversations.overflow_set(member, "summarise")
    assert conversations.overflow_of(member) == ChatPreferences.Overflow.SUMMARISE
    conversation = long_conversation(member, exchanges=8)  # twice the context is enough here

    first = ask(member_client, conversation, "What is 1 plus one?")

    left_out = conversation.messages.filter(role="assistant").last().messages_left_out  # type: ignore[union-attr]
    assert left_out > 0
    assert first[-1] == {"event": "summary", "covers": left_out}  # after the answer
    conversation.refresh_from_db()
    assert conversation.summary and conversation.summary_covers == left_out
    summarising = engine.received[1]
    assert summarising[0]["role"] == "system" and "note" in summarising[0]["content"]
    oldest = conversation.messages.all()[:left_out]
    assert summarising[1:-1] == [{"role": m.role, "content": m.content} for m in oldest]

    second = ask(member_client, conversation, "What is 2 plus one?")

    sent = engine.received[2]
    assert sent[0] == {
        "role": "system",
        "content": f"{conversations.SUMMARY_HEADING}\n{conversation.summary}",
    }
    later = [{"role": m.role, "content": m.content} for m in conversation.messages.all()]
    assert sent[1:] == later[left_out:-1]  # the question was stored once the engine took it
    answer = conversation.messages.filter(role="assistant").last()
    assert answer is not None and answer.messages_summarised == left_out
    assert "saw a summary" in done_of(second)["context_note"]
    conversation.refresh_from_db()  # the second answer may have left out more, and noted them
    page = member_client.get(f"/chat/{conversation.pk}/").content.decode()
    assert f"The model's note of the {conversation.summary_covers} oldest messages" in page


def test_the_api_still_refuses_a_conversation_longer_than_the_context(
    member: Any, model: LocalModel, engine: RecordingDecoder
) -> None:
    """As OpenAI does: its clients expect context_length_exceeded, not a silent cut."""
    _, key = apikey_create(member, "tests")
    messages = conversations.history(long_conversation(member))
    body = {"model": MODEL, "messages": [*messages, {"role": "user", "content": "And 3?"}]}

    async def complete() -> Any:
        return await AsyncClient().post(
            "/v1/chat/completions", body, content_type="application/json",
            headers={"Authorization": f"Bearer {key}"},
        )  # fmt: skip

    refused = async_to_sync(complete)()

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    assert refused.json()["error"]["param"] == "messages"


def test_the_overflow_choice_must_be_one_offered(member: Any) -> None:
    with pytest.raises(ChatError, match="Choose from the list"):
        conversations.overflow_set(member, "forget")

    assert conversations.overflow_of(member) == ChatPreferences.Overflow.LEAVE_OUT
    assert not ChatPreferences.objects.exists()


def test_the_note_goes_with_its_conversation(member: Any, db: None) -> None:
    conversation = long_conversation(member, exchanges=2)
    Conversation.objects.filter(pk=conversation.pk).update(summary="They like 7.", summary_covers=2)

    conversations.conversation_delete(member, conversation.pk)
    conversations.deleted_purge(now=timezone.now() + conversations.UNDO_WINDOW * 2)

    assert not Conversation.objects.filter(summary__contains="7").exists()
    assert not ChatMessage.objects.exists()


def test_the_note_shows_at_the_top_of_its_conversation_as_text(
    member: Any, member_client: Client
) -> None:
    conversation = long_conversation(member, exchanges=2)
    hostile = "<script>window.pwned = 1</script>They like 7."
    Conversation.objects.filter(pk=conversation.pk).update(summary=hostile, summary_covers=2)

    page = member_client.get(f"/chat/{conversation.pk}/").content.decode()

    assert "The model's note of the 2 oldest messages" in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;They like 7." in page
    assert "<script>window.pwned" not in page
