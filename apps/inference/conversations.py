"""Members' conversations with the local models: kept per member, deleted by their retention.

A private chat never reaches this module: nothing of it is written anywhere.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.identity.models import Member
from apps.inference.models import ChatMessage, ChatPreferences, Conversation

Message = dict[str, str]

RETENTION_CHOICES = {0: "Until I delete them", 1: "1 day", 7: "7 days", 30: "30 days",
                     90: "90 days", 365: "1 year"}  # fmt: skip
TITLE_LENGTH = 60
SEARCH_RESULTS = 50
# A deleted conversation can be brought back this long; then it is gone for good.
UNDO_WINDOW = timedelta(minutes=10)
# A few examples, as turns the model already answered: even a very small model then names
# the question rather than answering it again (measured on SmolLM2-135M).
TITLE_INSTRUCTION = "You give each question a short title of a few words."
TITLE_EXAMPLES = (
    ("What is the weather like in Rome in May?", "Weather in Rome in May"),
    ("How do I fix a flat tyre on my bicycle? I have a pump and patches.",
     "Fixing a flat bicycle tyre"),
    ("Can you write a haiku about autumn leaves?", "Haiku about autumn leaves"),
)  # fmt: skip
TITLE_MOST_WORDS = 12
TITLE_SOURCE_CHARS = 1_500  # of the first question: enough to name it
MAX_QUESTION_CHARS = 32_000
# The note is the model's own words, sent as a system message in place of what it covers.
SUMMARY_HEADING = "A note of the earlier part of this conversation, which no longer fits:"
SUMMARY_INSTRUCTION = (
    "You keep a short note of a conversation between a person and an AI assistant, so the "
    "assistant can go on with it once its oldest messages are gone. Write the facts, names, "
    "numbers, decisions and open questions that matter, in a few plain sentences. Write only "
    "the note."
)
SUMMARY_REQUEST = "Write the note of our conversation so far."


class ChatError(Exception):
    """A request the chat refuses; the message says why and nothing was changed."""


def conversations_of(member: Member) -> QuerySet[Conversation]:
    return Conversation.objects.filter(member=member, deleted_at=None).order_by("-updated_at")


def conversations_search(member: Member, query: str) -> QuerySet[Conversation]:
    """The member's conversations whose title or any message holds every word of the query."""
    found = conversations_of(member)
    for word in query.split()[:8]:
        in_messages = Conversation.objects.filter(messages__content__icontains=word)
        found = found.filter(Q(title__icontains=word) | Q(pk__in=in_messages.values("pk")))
    return found[:SEARCH_RESULTS]


def conversation_of(member: Member, conversation_id: Any) -> Conversation:
    """The member's own conversation; another member's is as absent as a missing one."""
    try:
        return Conversation.objects.get(pk=int(conversation_id), member=member, deleted_at=None)
    except (TypeError, ValueError, Conversation.DoesNotExist):
        raise ChatError("There is no such conversation.") from None


def conversation_rename(member: Member, conversation_id: Any, title: Any) -> Conversation:
    conversation = conversation_of(member, conversation_id)
    if not isinstance(title, str) or not title.strip():
        raise ChatError("Give the conversation a name.")
    conversation.title = _title_cut(title)
    conversation.title_source = Conversation.TitleSource.MEMBER
    conversation.save(update_fields=["title", "title_source"])
    return conversation


def title_prompt(conversation: Conversation) -> list[Message]:
    """What asks the model to name a conversation after its first question."""
    first = conversation.messages.filter(role=ChatMessage.Role.USER).first()
    question = first.content[:TITLE_SOURCE_CHARS] if first else conversation.title
    examples: list[Message] = []
    for asked, title in TITLE_EXAMPLES:
        examples += [{"role": "user", "content": f"Question: {asked}"},
                     {"role": "assistant", "content": title}]  # fmt: skip
    return [
        {"role": "system", "content": TITLE_INSTRUCTION},
        *examples,
        {"role": "user", "content": f"Question: {question}"},
    ]


def title_save(conversation: Conversation, text: str) -> str:
    """The model's title, unless the member named the conversation meanwhile; '' if not kept."""
    title = _title_cleaned(text)
    if not title:
        return ""
    updated = Conversation.objects.filter(
        pk=conversation.pk, title_source=Conversation.TitleSource.QUESTION
    ).update(title=title, title_source=Conversation.TitleSource.MODEL)
    return title if updated else ""


def _title_cleaned(text: str) -> str:
    """A model's title on one line, without the quotes, prefix or full stop models add."""
    line = next((part for part in text.strip().splitlines() if part.strip()), "")
    if line.lstrip().startswith("```") or len(line.split()) > TITLE_MOST_WORDS:
        return ""  # the model answered instead: the question stays the title
    quotes = "\"'*#`“”«» "
    line = re.sub(r"^title\s*:\s*", "", line.strip(quotes), flags=re.IGNORECASE)
    line = line.strip(quotes).rstrip(".").strip(quotes)
    return _title_cut(line) if line else ""


def _title_cut(text: str) -> str:
    title = " ".join(text.split())
    if len(title) > TITLE_LENGTH:
        title = title[: TITLE_LENGTH - 1].rstrip() + "…"
    return title


def question_checked(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ChatError("Write a question first.")
    if len(text) > MAX_QUESTION_CHARS:
        raise ChatError(f"A question may be at most {MAX_QUESTION_CHARS:,} characters.")
    return text


def history(conversation: Conversation) -> list[Message]:
    """The messages so far, as the model reads them: the model's note of the oldest ones in
    their place once it has made one (see `summary_save`)."""
    return _with_note(conversation, _readable(conversation))


def _with_note(conversation: Conversation, messages: list[Message]) -> list[Message]:
    """The conversation's note in place of the messages it covers, if it has one."""
    if not conversation.summary:
        return messages
    note = {"role": "system", "content": f"{SUMMARY_HEADING}\n{conversation.summary}"}
    return [note, *messages[conversation.summary_covers :]]


def _readable(conversation: Conversation, before: int | None = None) -> list[Message]:
    """Every message of the conversation the model can read (answers that gave no text left
    out), or those before one message: the list a note's `summary_covers` counts in."""
    messages = conversation.messages.all()
    if before is not None:
        messages = messages.filter(pk__lt=before)
    return [{"role": m.role, "content": m.content} for m in messages if m.content]


def _readable_ids(conversation: Conversation) -> list[int]:
    return [pk for pk, content in conversation.messages.values_list("pk", "content") if content]


def last_covered(conversation: Conversation, covers: int) -> int:
    """The id of the last message a note of the first `covers` messages covers."""
    return _readable_ids(conversation)[covers - 1]


def history_before(conversation: Conversation, message_id: Any) -> tuple[list[Message], int]:
    """The conversation as the model reads it up to one of its questions, for an answer made
    again or a question edited (that question and all after it are to be replaced), and how
    many messages the note read in their place covers."""
    earlier = _readable(conversation, before=_question_of(conversation, message_id).pk)
    if conversation.summary and conversation.summary_covers <= len(earlier):
        return _with_note(conversation, earlier), conversation.summary_covers
    return earlier, 0  # the note covers messages being replaced: it goes with them


def _question_of(conversation: Conversation, message_id: Any) -> ChatMessage:
    try:
        return conversation.messages.get(pk=int(message_id), role=ChatMessage.Role.USER)
    except (TypeError, ValueError, ChatMessage.DoesNotExist):
        raise ChatError("There is no such question in this conversation.") from None


def last_question(conversation: Conversation, question_id: Any) -> ChatMessage:
    """The conversation's last question, which must be the one the page answers again: a page
    that is behind must not replace an exchange it does not show."""
    question = conversation.messages.filter(role=ChatMessage.Role.USER).order_by("-id").first()
    if question is None or question.pk != question_id or isinstance(question_id, bool):
        raise ChatError("Only the last question can be answered again; reload the page.")
    return question


@transaction.atomic
def messages_replace_from(conversation: Conversation, message_id: int) -> None:
    """Delete a question and everything after it; a note that covered any of it goes too."""
    gone = conversation.messages.filter(pk__gte=message_id)
    kept = len(_readable(conversation, before=message_id))
    gone.delete()
    if conversation.summary_covers > kept:
        Conversation.objects.filter(pk=conversation.pk).update(summary="", summary_covers=0)
        conversation.summary, conversation.summary_covers = "", 0


def conversation_start(member: Member, question: str, route_key: str = "") -> Conversation:
    return Conversation.objects.create(
        member=member, title=_title_cut(question), route_key=route_key
    )


def question_save(conversation: Conversation, question: str) -> ChatMessage:
    return ChatMessage.objects.create(
        conversation=conversation, role=ChatMessage.Role.USER, content=question
    )


def answer_save(
    conversation: Conversation,
    text: str,
    provenance: dict[str, Any],
    finish_reason: str,
    *,
    left_out: int = 0,
    summarised: int = 0,
) -> ChatMessage:
    """`provenance`: a local answer's model, file hash and sampling, or an outside answer's
    model, provider, cost, request id and payment hash (see pipeline.py)."""
    answer = ChatMessage.objects.create(
        conversation=conversation,
        role=ChatMessage.Role.ASSISTANT,
        content=text,
        model_name=provenance["model"],
        model_sha256=provenance.get("model_sha256", ""),
        sampling=provenance.get("sampling"),
        provider=provenance.get("provider", ""),
        cost_msat=provenance.get("cost_msat"),
        request_id=provenance.get("request_id", ""),
        payment_hash=provenance.get("payment_hash", ""),
        finish_reason=finish_reason,
        messages_left_out=left_out,
        messages_summarised=min(summarised, left_out),
    )
    conversation.save(update_fields=["updated_at"])
    return answer


def answer_trim(member: Member, conversation_id: Any, shown: Any) -> bool:
    """Keep of a stopped answer only what the page had shown: the server sent more than had
    arrived when Stop was pressed. False while that answer is not saved yet (the server
    saves it once it notices the page went away). Never lengthens or changes an answer."""
    conversation = conversation_of(member, conversation_id)
    if not isinstance(shown, str):
        raise ChatError("Say what was shown of the answer.")
    last = conversation.messages.order_by("-id").first()
    if last is None or last.role != ChatMessage.Role.ASSISTANT:
        return False
    if last.finish_reason != "cancelled" or not last.content.startswith(shown):
        raise ChatError("Only a stopped answer can be cut, and only to what it began with.")
    ChatMessage.objects.filter(pk=last.pk).update(content=shown)
    return True


def summary_prompt(conversation: Conversation, covers: int) -> list[Message]:
    """What asks the model for a note of the conversation's first `covers` messages: the
    messages its note does not cover yet, after the note it already has."""
    instruction = SUMMARY_INSTRUCTION
    if conversation.summary:
        instruction += f"\n\nYour note so far:\n{conversation.summary}"
    newly = _readable(conversation)[conversation.summary_covers : covers]
    request = {"role": "user", "content": SUMMARY_REQUEST}
    return [{"role": "system", "content": instruction}, *newly, request]


@transaction.atomic
def summary_save(
    conversation: Conversation, text: str, *, covers: int, was: int, through: int
) -> bool:
    """Keep the note if the conversation's note still covers `was` messages (an answer made
    meanwhile may have made its own) and the messages it covers, up to `through`, are all
    still there (a question edited meanwhile replaces them). False when not."""
    text = text.strip()
    if not text or covers <= was:
        return False
    kept = Conversation.objects.select_for_update().filter(pk=conversation.pk, summary_covers=was)
    if not kept.exists() or _readable_ids(conversation)[covers - 1 : covers] != [through]:
        return False
    return kept.update(summary=text, summary_covers=covers) == 1


def conversation_delete(member: Member, conversation_id: Any) -> Conversation:
    """Set aside for UNDO_WINDOW (`conversation_restore`), then deleted for good."""
    conversation = conversation_of(member, conversation_id)
    Conversation.objects.filter(pk=conversation.pk, deleted_at=None).update(
        deleted_at=timezone.now()
    )
    return conversation


def conversation_restore(member: Member, conversation_id: Any) -> Conversation:
    """Bring back a conversation deleted less than UNDO_WINDOW ago."""
    since = timezone.now() - UNDO_WINDOW
    try:
        pk = int(conversation_id)
    except (TypeError, ValueError):
        pk = 0
    restored = Conversation.objects.filter(pk=pk, member=member, deleted_at__gte=since).update(
        deleted_at=None
    )
    if not restored:
        raise ChatError("That conversation is deleted for good; it can't be brought back.")
    return conversation_of(member, pk)


def deleted_purge(now: datetime | None = None, member: Member | None = None) -> int:
    """Delete for good what was deleted longer than UNDO_WINDOW ago; how many went."""
    cutoff = (now or timezone.now()) - UNDO_WINDOW
    expired = Conversation.objects.filter(deleted_at__lt=cutoff)
    if member is not None:
        expired = expired.filter(member=member)
    return int(expired.delete()[1].get("inference.Conversation", 0))


def retention_of(member: Member) -> int:
    preferences = ChatPreferences.objects.filter(member=member).first()
    return preferences.retention_days if preferences else 0


def retention_set(member: Member, days: Any) -> int:
    """Keep the member's conversations `days` days after their last message; 0 keeps them."""
    text = str(days) if isinstance(days, int | str) else ""
    kept = int(text) if text.isdecimal() and len(text) < 6 else -1  # int() refuses "²"
    if kept not in RETENTION_CHOICES:
        raise ChatError("Choose how long to keep conversations from the list.")
    ChatPreferences.objects.update_or_create(member=member, defaults={"retention_days": kept})
    retention_sweep(members=[member])
    return kept


def overflow_of(member: Member) -> str:
    preferences = ChatPreferences.objects.filter(member=member).first()
    return preferences.overflow if preferences else ChatPreferences.Overflow.LEAVE_OUT


def overflow_set(member: Member, choice: Any) -> str:
    """What becomes of the oldest messages once a conversation outgrows the model's context."""
    if choice not in ChatPreferences.Overflow.values:
        raise ChatError("Choose from the list what becomes of the oldest messages.")
    ChatPreferences.objects.update_or_create(member=member, defaults={"overflow": choice})
    return str(choice)


def retention_sweep(now: datetime | None = None, members: list[Member] | None = None) -> int:
    """Delete the conversations older than their member's retention; how many went."""
    now = now or timezone.now()
    preferences = ChatPreferences.objects.filter(retention_days__gt=0)
    if members is not None:
        preferences = preferences.filter(member__in=members)
    deleted = deleted_purge(now) if members is None else 0
    for preference in preferences:
        expired = Conversation.objects.filter(
            member_id=preference.member_id,
            updated_at__lt=now - timedelta(days=preference.retention_days),
        )
        deleted += int(expired.delete()[1].get("inference.Conversation", 0))
    return deleted


def vault_keep(conversation: Conversation, sealed: str) -> None:
    """The conversation's placeholders, as they stand after its latest question went out."""
    conversation.vault_sealed = sealed
    Conversation.objects.filter(pk=conversation.pk).update(vault_sealed=sealed)
