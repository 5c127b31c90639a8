"""Conversations a member keeps: titles, search, rename, delete with undo, answering again and
editing a question. In-process: what reaches the engine is checked on the turn it builds."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.inference import chat_settings, conversations
from apps.inference.chat_turn import Turn
from apps.inference.conversations import ChatError
from apps.inference.models import ChatMessage, Conversation, LocalModel
from tests.inference.conftest import MODEL

PROVENANCE = {"model": MODEL, "model_sha256": "b" * 64, "sampling": {}}


def exchange(member: Any, *pairs: tuple[str, str]) -> Conversation:
    conversation = conversations.conversation_start(member, pairs[0][0])
    for question, answer in pairs:
        conversations.question_save(conversation, question)
        conversations.answer_save(conversation, answer, PROVENANCE, "stop")
    return conversation


def turn(member: Any, **body: Any) -> Turn:
    return Turn.from_request(member, json.dumps({"model": MODEL, **body}).encode())


def test_a_member_renames_a_conversation_and_the_model_no_longer_names_it(
    member: Any, member_client: Client
) -> None:
    conversation = exchange(member, ("What is a sat?", "A hundred-millionth of a bitcoin."))

    response = member_client.post(f"/chat/{conversation.pk}/rename", {"title": "  Sats  "})

    assert response.status_code == 302
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Sats", "member")
    assert conversations.title_save(conversation, "Bitcoin units") == ""
    conversation.refresh_from_db()
    assert conversation.title == "Sats"


def test_an_empty_name_is_refused_and_the_title_stays(member: Any, member_client: Client) -> None:
    conversation = exchange(member, ("Hi", "Hello"))

    page = member_client.post(f"/chat/{conversation.pk}/rename", {"title": " "}, follow=True)

    assert "Give the conversation a name." in page.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "Hi"


@pytest.mark.parametrize("path", ["/chat/ask", "/chat/stopped"])
def test_json_nested_too_deeply_is_refused_not_a_crash(member_client: Client, path: str) -> None:
    body = "[" * 20_000 + "]" * 20_000

    response = member_client.post(path, body, content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


def test_nobody_renames_or_deletes_another_members_conversation(
    owner: Any, member_client: Client
) -> None:
    owners = exchange(owner, ("Private plans", "Noted"))

    member_client.post(f"/chat/{owners.pk}/rename", {"title": "Mine now"})
    member_client.post(f"/chat/{owners.pk}/delete")

    owners.refresh_from_db()
    assert (owners.title, owners.deleted_at) == ("Private plans", None)


def test_the_model_names_a_conversation_once_and_its_title_is_cleaned(member: Any) -> None:
    conversation = exchange(member, ("how do i boil an egg??", "Put it in boiling water."))

    kept = conversations.title_save(conversation, '\n"Title: Boiling an Egg."\nmore text')

    assert kept == "Boiling an Egg"
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Boiling an Egg", "model")
    assert conversations.title_save(conversation, "Another title") == ""


@pytest.mark.parametrize(
    "said",
    [
        "```python\ndef f(): pass\n```",
        "Sure! " + "This is a long answer and not a title. " * 3,
        "  \n",
    ],
)
def test_a_title_the_model_did_not_write_leaves_the_question_as_title(
    member: Any, said: str
) -> None:
    conversation = exchange(member, ("How do I reverse a list?", "Use reversed()."))

    assert conversations.title_save(conversation, said) == ""

    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == (
        "How do I reverse a list?",
        "question",
    )


def test_the_title_prompt_asks_to_name_the_first_question_after_examples(member: Any) -> None:
    conversation = exchange(member, ("First question", "First answer"), ("Second", "Later"))

    prompt = conversations.title_prompt(conversation)

    assert prompt[0]["role"] == "system"
    assert [m["role"] for m in prompt[1:-1]] == ["user", "assistant"] * 3  # the examples
    assert prompt[-1] == {"role": "user", "content": "Question: First question"}
    assert not any("First answer" in m["content"] or "Second" in m["content"] for m in prompt)


def test_search_finds_words_in_titles_and_messages_of_ones_own_conversations_only(
    owner: Any, member: Any, member_client: Client
) -> None:
    exchange(member, ("Sourdough starter", "Feed it flour and water daily."))
    exchange(member, ("Tax return", "Keep the receipts."))
    exchange(owner, ("Sourdough for the owner", "Flour again."))

    found = member_client.get("/chat/", {"q": "flour"}).content.decode()
    both_words = member_client.get("/chat/", {"q": "receipts tax"}).content.decode()
    nothing = member_client.get("/chat/", {"q": "flour receipts"}).content.decode()

    assert "Sourdough starter" in found and "Tax return" not in found
    assert "for the owner" not in found
    assert "Tax return" in both_words and "Sourdough" not in both_words
    assert "0 found" in nothing


def test_a_deleted_conversation_can_be_brought_back_for_a_while(
    member: Any, member_client: Client
) -> None:
    conversation = exchange(member, ("Holiday plans", "Go north."))

    after_delete = member_client.post(f"/chat/{conversation.pk}/delete", follow=True)

    page = after_delete.content.decode()
    assert 'id="undo"' in page and "Holiday plans" in page  # the undo bar names it
    assert member_client.get(f"/chat/{conversation.pk}/").status_code == 404
    assert not conversations.conversations_of(member).exists()

    member_client.post(f"/chat/{conversation.pk}/restore")

    assert member_client.get(f"/chat/{conversation.pk}/").status_code == 200
    assert ChatMessage.objects.filter(conversation=conversation).count() == 2


def test_after_the_undo_window_a_deleted_conversation_is_gone_for_good(
    member: Any, member_client: Client
) -> None:
    conversation = exchange(member, ("Old secret", "Forgotten"))
    member_client.post(f"/chat/{conversation.pk}/delete")
    long_ago = timezone.now() - conversations.UNDO_WINDOW - timedelta(seconds=1)
    Conversation.objects.filter(pk=conversation.pk).update(deleted_at=long_ago)

    with pytest.raises(ChatError):
        conversations.conversation_restore(member, conversation.pk)
    member_client.get("/chat/")  # the member's next visit purges it

    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not ChatMessage.objects.filter(conversation_id=conversation.pk).exists()


def test_answering_again_replaces_the_last_answer_and_reads_what_came_before(
    member: Any, model: LocalModel
) -> None:
    conversation = exchange(member, ("One", "Uno"), ("Two", "Dos"))
    last = conversation.messages.get(content="Two")

    again = turn(member, conversation=conversation.pk, regenerate=last.pk)

    assert again.question == "Two"
    assert again.messages() == [
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Uno"},
        {"role": "user", "content": "Two"},
    ]
    again._question_save()  # as once the engine has taken it
    contents = list(conversation.messages.values_list("content", flat=True))
    assert contents == ["One", "Uno", "Two"]


def test_a_page_that_is_behind_cannot_make_another_answer_again(
    member: Any, model: LocalModel
) -> None:
    conversation = exchange(member, ("One", "Uno"), ("Two", "Dos"))
    first = conversation.messages.get(content="One")

    for stale in (first.pk, True, "x"):
        with pytest.raises(ChatError, match="Only the last question"):
            turn(member, conversation=conversation.pk, regenerate=stale, question="x")
    assert conversation.messages.count() == 4


def test_an_edited_question_replaces_it_and_everything_after(
    member: Any, model: LocalModel
) -> None:
    conversation = exchange(member, ("One", "Uno"), ("Two", "Dos"), ("Three", "Tres"))
    second = conversation.messages.get(content="Two")

    edited = turn(member, conversation=conversation.pk, edit=second.pk, question="Deux?")
    edited._question_save()

    assert edited.messages()[-1] == {"role": "user", "content": "Deux?"}
    assert list(conversation.messages.values_list("content", flat=True)) == ["One", "Uno", "Deux?"]


def test_an_edit_of_an_answer_or_of_another_conversation_is_refused(
    owner: Any, member: Any, model: LocalModel
) -> None:
    conversation = exchange(member, ("One", "Uno"))
    answer = conversation.messages.get(content="Uno")
    owners = exchange(owner, ("Owner's", "Answer"))
    owners_question = owners.messages.get(content="Owner's")

    for edit in (answer.pk, owners_question.pk, "1", True):
        with pytest.raises(ChatError):
            turn(member, conversation=conversation.pk, edit=edit, question="x")
    assert conversation.messages.count() == 2


def test_a_note_covering_replaced_messages_goes_with_them(member: Any, model: LocalModel) -> None:
    conversation = exchange(member, ("One", "Uno"), ("Two", "Dos"), ("Three", "Tres"))
    Conversation.objects.filter(pk=conversation.pk).update(summary="note", summary_covers=4)
    second = conversation.messages.get(content="Two")

    edited = turn(member, conversation=conversation.pk, edit=second.pk, question="Deux?")

    assert edited.covered == 0
    assert all(m["content"] != "note" and "note" not in m["content"] for m in edited.earlier)
    edited._question_save()
    conversation.refresh_from_db()
    assert (conversation.summary, conversation.summary_covers) == ("", 0)


def test_a_note_of_messages_an_edit_replaced_meanwhile_is_not_kept(
    member: Any, model: LocalModel
) -> None:
    pairs = [(f"Q{n}", f"A{n}") for n in range(6)]
    conversation = exchange(member, *pairs)
    through = conversations.last_covered(conversation, 6)  # the note is asked for: Q0 to A2
    second = conversation.messages.get(content="Q1")
    edited = turn(member, conversation=conversation.pk, edit=second.pk, question="Q1 again")
    edited._question_save()  # meanwhile, Q1 and all after it are replaced

    kept = conversations.summary_save(conversation, "A note", covers=6, was=0, through=through)

    conversation.refresh_from_db()
    assert not kept and (conversation.summary, conversation.summary_covers) == ("", 0)
    fresh = conversations.last_covered(conversation, 2)
    assert conversations.summary_save(conversation, "Note", covers=2, was=0, through=fresh)


def test_a_conversation_can_go_without_the_members_default_system_prompt(
    member: Any, model: LocalModel
) -> None:
    chat_settings.defaults_set(member, {"system_prompt": "Answer in French.", "temperature": 0.7,
                                        "top_p": 0.95})  # fmt: skip
    conversation = exchange(member, ("One", "Uno"))
    plain = {"system_prompt": "", "temperature": "0.7", "top_p": "0.95"}

    turn(member, conversation=conversation.pk, question="Two?", settings=plain)._question_save()
    later = turn(member, conversation=conversation.pk, question="Three?")

    assert later.chosen.system_prompt == ""
    assert later.messages()[0]["role"] == "user"


def test_the_system_prompt_and_a_note_reach_the_model_as_one_system_message(
    member: Any, model: LocalModel
) -> None:
    conversation = exchange(member, ("One", "Uno"), ("Two", "Dos"))
    Conversation.objects.filter(pk=conversation.pk).update(summary="We counted.", summary_covers=2)
    settings = {"system_prompt": "Answer in Spanish.", "temperature": "0.2", "top_p": "0.9"}

    asked = turn(member, conversation=conversation.pk, question="Three?", settings=settings)

    messages = asked.messages()
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("Answer in Spanish.")
    assert "We counted." in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert (asked.sampling.temperature, asked.sampling.top_p) == (0.2, 0.9)


def test_settings_sent_with_a_question_stay_with_the_conversation(
    member: Any, model: LocalModel
) -> None:
    conversation = exchange(member, ("One", "Uno"))
    sent = {"system_prompt": "Be brief.", "temperature": "0.1", "top_p": "0.95", "max_tokens": 64}

    turn(member, conversation=conversation.pk, question="Two?", settings=sent)._question_save()
    later = turn(member, conversation=conversation.pk, question="Three?")

    conversation.refresh_from_db()
    kept = chat_settings.settings_of(conversation, member)
    assert (kept.system_prompt, kept.temperature, kept.max_tokens) == ("Be brief.", 0.1, 64)
    assert later.sampling.max_tokens == 64 and later.chosen.system_prompt == "Be brief."


@pytest.mark.parametrize(
    "sent", [{"temperature": "9"}, {"temperature": "0.7", "top_p": "2"}, "hot"]
)
def test_settings_out_of_range_are_refused_before_anything_is_asked(
    member: Any, member_client: Client, model: LocalModel, sent: Any
) -> None:
    body = {"model": MODEL, "question": "Hi", "settings": sent}

    response = member_client.post("/chat/ask", json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert Conversation.objects.count() == 0
