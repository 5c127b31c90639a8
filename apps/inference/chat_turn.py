"""One turn of the dashboard's chat: a question and its answer, streamed as JSON lines.

A turn asks anew, answers the last question again (`regenerate`), or replaces a question and
all after it (`edit`). It changes the conversation only once the engine has taken the question:
a refusal leaves everything as it was.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.identity.models import Member
from apps.inference import chat_settings, conversations, pipeline
from apps.inference.answering import Sampling, answer_collected
from apps.inference.backends.base import AnswerRefused, Done, Events, Failed, RefusalCode, Token
from apps.inference.chat_request import OpenAIError, load_json, parse_messages
from apps.inference.chat_settings import ChatSettings
from apps.inference.context_fit import Overflow
from apps.inference.conversations import ChatError, Message
from apps.inference.markdown import render_markdown
from apps.inference.models import ChatPreferences, Conversation, LocalModel, context_note
from apps.inference.pipeline import AnswerRequest, Origin
from apps.privacy.kept import vault_sealed, vault_unsealed
from apps.privacy.vault import Vault
from apps.providers import routing

TITLE_TOKENS = 24
TITLE_EXCHANGES = 2


class Turn:
    """One question and its answer, in a stored conversation or a private one (stored nowhere)."""

    def __init__(self, member: Member, model: str, question: str, chosen: ChatSettings) -> None:
        self.member, self.model, self.question, self.chosen = member, model, question, chosen
        self.stored = True
        self.conversation: Conversation | None = None
        self.replace_from: int | None = None  # the question this turn replaces, and all after
        self.question_id: int | None = None
        self.earlier: list[Message] = []
        self.covered = 0  # messages of the conversation that `earlier` holds a note of
        self.summarise = False  # the member wants a note of what no longer fits
        self.price_shown_msat: int | None = None  # an outside model's price, as the chat showed it
        self.leaving_shown: str | None = None  # what the preview showed would leave (its digest)
        self.route_key = uuid.uuid4().hex  # a new conversation's, for a spread route
        self.vault = Vault()  # the conversation's placeholders for its private values
        self.vault_held = 0  # values it held before this turn: a vault only ever grows
        self.provenance: dict[str, Any] = {}
        self.sampling = Sampling(
            max_tokens=chosen.answer_tokens,
            temperature=chosen.temperature,
            top_p=chosen.top_p,
            seed=secrets.randbelow(2**31),  # recorded, so the same answer can be had again
        )

    @classmethod
    def from_request(cls, member: Member, body: bytes) -> Turn:
        return cls.from_data(member, json_object(body))

    @classmethod
    def from_data(cls, member: Member, data: dict[str, Any]) -> Turn:
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise ChatError("Choose a model from the list.")
        if data.get("private") is True:
            if "/" in model:  # an outside model's name; local ones are slugs
                raise ChatError(
                    "A private chat asks only the models on this node: what goes outside is "
                    "recorded on the node."
                )
            turn = cls(member, model, _question(data), _settings(member, None, data))
            turn.stored = False
            turn.earlier = _private_history(data.get("history"))
            turn.price_shown_msat = _price_shown(data)
            turn.leaving_shown = _leaving_shown(data)
            return turn
        conversation = None
        if data.get("conversation") is not None:
            conversation = conversations.conversation_of(member, data["conversation"])
        turn = cls(member, model, "", _settings(member, conversation, data))
        turn._continue(conversation, data)
        turn.price_shown_msat = _price_shown(data)
        turn.leaving_shown = _leaving_shown(data)
        turn.summarise = conversations.overflow_of(member) == ChatPreferences.Overflow.SUMMARISE
        return turn

    def _continue(self, conversation: Conversation | None, data: dict[str, Any]) -> None:
        """Where in the conversation this turn's question goes, and what the model reads first."""
        self.conversation = conversation
        if conversation is None:
            self.question = _question(data)
            return
        self.vault = vault_unsealed(conversation.vault_sealed)
        self.vault_held = len(self.vault)
        if data.get("regenerate") is not None:
            last = conversations.last_question(conversation, data["regenerate"])
            self.question, self.replace_from = last.content, last.pk
        elif data.get("edit") is not None:
            self.question, self.replace_from = _question(data), _message_id(data["edit"])
        else:
            self.question = _question(data)
        if self.replace_from is None:
            self.earlier = conversations.history(conversation)
            self.covered = conversation.summary_covers
        else:
            self.earlier, self.covered = conversations.history_before(
                conversation, self.replace_from
            )

    async def open(self) -> Events:
        """Ask the model; the question is stored once the model has taken it."""
        events = await pipeline.answer(self.request())
        if self.stored:
            await sync_to_async(self._question_save)()
        return events

    def request(self) -> AnswerRequest:
        return AnswerRequest(
            self.member,
            Origin.CHAT,
            self.model,
            self.messages(),
            self.sampling,
            private=not self.stored,
            overflow=Overflow.DROP_OLDEST,  # a conversation goes on; the answer says what it missed
            price_shown_msat=self.price_shown_msat,
            conversation_key=self._conversation_key(),
            vault=self.vault if self.stored else None,
            leaving_shown=self.leaving_shown,
        )

    def _conversation_key(self) -> str | None:
        """What a spread route keeps this conversation with one model by; None for a private
        chat (each of its questions counts as a new conversation)."""
        if not self.stored:
            return None
        if self.conversation is None:
            return self.route_key
        return self.conversation.route_key or f"conversation:{self.conversation.pk}"

    def messages(self) -> list[Message]:
        """The system prompt and any note as one leading system message: chat templates differ
        in what they make of several."""
        messages = [*self.earlier, {"role": "user", "content": self.question}]
        system = [self.chosen.system_prompt] if self.chosen.system_prompt else []
        while messages[0]["role"] == "system" and len(messages) > 1:
            system.append(messages.pop(0)["content"])
        if system:
            messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
        return messages

    def _question_save(self) -> None:
        if self.conversation is None:
            self.conversation = conversations.conversation_start(
                self.member, self.question, self.route_key
            )
        elif self.replace_from is not None:
            conversations.messages_replace_from(self.conversation, self.replace_from)
        chat_settings.conversation_settings_set(self.conversation, self.chosen)
        if len(self.vault) != self.vault_held:
            conversations.vault_keep(self.conversation, vault_sealed(self.vault))
        self.question_id = conversations.question_save(self.conversation, self.question).pk

    async def stream(self, events: Events) -> AsyncIterator[bytes]:
        parts: list[str] = []
        end: Done | Failed | None = None
        try:
            if self.conversation is not None:
                yield _line(event="start", conversation=self.conversation.pk,
                            title=self.conversation.title, question=self.question_id)  # fmt: skip
            async for event in events:
                if not isinstance(event, Token):
                    end = event
                    break
                parts.append(event.text)
                yield _line(event="token", text=event.text)
            assert end is not None  # the pipeline ends every answer with Done or Failed
            yield await self._end("".join(parts), end)
            async for line in self._after(end):
                yield line
        finally:
            await events.aclose()  # a page that left, or Stop: the generation ends at once
            if end is None and self.conversation is not None:
                save = sync_to_async(self._answer_save)("".join(parts), "cancelled")
                await asyncio.shield(save)

    async def _after(self, end: Done | Failed) -> AsyncIterator[bytes]:
        """After the answer, so that nobody waits for them: the conversation's title, and a
        note of what no longer fits the model's context."""
        if self.conversation is None or not isinstance(end, Done):
            return
        if await sync_to_async(_wants_title)(self.conversation):
            yield await self._title()
        if self.summarise and end.dropped_messages > 0:
            yield await self._summarise(self.covered + end.dropped_messages)

    async def _end(self, text: str, end: Done | Failed) -> bytes:
        if isinstance(end, Failed):
            if self.conversation is not None:
                await sync_to_async(self._answer_save)(text, "error")
            return _line(event="error", message=end.message)
        dropped = end.dropped_messages
        self.provenance = dict(end.provenance)
        answer_id = None
        if self.conversation is not None:
            answer_id = await sync_to_async(self._answer_save)(text, end.finish_reason, dropped)
        # Highlighting a long answer's code takes a while: not on the event loop.
        html = await sync_to_async(render_markdown, thread_sensitive=False)(text)
        return _line(event="done", finish_reason=end.finish_reason,
                     html=html, answer=answer_id,
                     provenance=self.provenance,
                     context_note=context_note(self.covered + dropped,
                                               self.covered))  # fmt: skip

    def _answer_save(self, text: str, finish_reason: str, dropped: int = 0) -> int:
        """`dropped`: what the engine left out of what it was sent, which starts after the
        messages the note covers (an answer that did not finish was not told)."""
        assert self.conversation is not None
        answer = conversations.answer_save(
            self.conversation,
            text,
            self.provenance or self._provenance_unended(),
            finish_reason,
            left_out=self.covered + dropped,
            summarised=self.covered,
        )
        return answer.pk

    def _provenance_unended(self) -> dict[str, Any]:
        """What is known of who answered when the answer did not end: an outside model's
        provider is the first part of its name (local models' names have no slash)."""
        provider, slash, _ = self.model.partition("/")
        shown = {"model": self.model, "sampling": self.sampling.shown()}
        if not slash or provider == routing.PREFIX:  # a route's: which model took it is unknown
            return shown
        return {**shown, "provider": provider}

    async def _title(self) -> bytes:
        """The local model names the conversation after its first answer."""
        assert self.conversation is not None
        prompt = await sync_to_async(conversations.title_prompt)(self.conversation)
        text = await self._ask_aside(prompt, TITLE_TOKENS)
        title = await sync_to_async(conversations.title_save)(self.conversation, text or "")
        return _line(event="title", conversation=self.conversation.pk, title=title)

    async def _summarise(self, covers: int) -> bytes:
        """Ask the model for a note of the first `covers` messages, for the turns to come."""
        assert self.conversation is not None
        prompt, through = await sync_to_async(self._summary_prompt)(covers)
        text = await self._ask_aside(prompt, max(16, settings.ENGINE_CONTEXT_PER_SLOT // 8))
        saved = text is not None and await sync_to_async(conversations.summary_save)(
            self.conversation, text, covers=covers, was=self.covered, through=through
        )
        return _line(event="summary", covers=covers if saved else self.covered)

    def _summary_prompt(self, covers: int) -> tuple[list[Message], int]:
        assert self.conversation is not None
        prompt = conversations.summary_prompt(self.conversation, covers)
        return prompt, conversations.last_covered(self.conversation, covers)

    async def _ask_aside(self, prompt: list[Message], max_tokens: int) -> str | None:
        """A whole answer to a request of the node's own, greedy, by a local model (what the
        node asks for itself never leaves it); None if it was not made."""
        model = await sync_to_async(_aside_model)(self.model)
        if model is None:
            return None
        sampling = Sampling(max_tokens=max_tokens, temperature=0.0, top_p=1.0, seed=0)
        asked = AnswerRequest(
            self.member, Origin.NODE, model, prompt, sampling, overflow=Overflow.DROP_OLDEST
        )
        try:
            events = await pipeline.answer(asked)
        except AnswerRefused:
            return None  # the next turn tries again
        text, end = await answer_collected(events)
        return text if isinstance(end, Done) else None


def _aside_model(chosen: str) -> str | None:
    """The model the conversation uses if it is local, else the first local model."""
    if LocalModel.objects.filter(name=chosen).exists():
        return chosen
    first = LocalModel.objects.order_by("added_at", "pk").first()
    return None if first is None else first.name


def _leaving_shown(data: dict[str, Any]) -> str | None:
    """The digest of what the preview showed would leave (pipeline.preview)."""
    digest = data.get("leaving")
    if digest is None:
        return None
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ChatError("'leaving' must be the digest the preview gave.")
    return digest


def _price_shown(data: dict[str, Any]) -> int | None:
    """The price the chat showed for an outside model (msat), which the answer may not pass."""
    price = data.get("price_msat")
    if price is None:
        return None
    if not isinstance(price, int) or isinstance(price, bool) or price < 0:
        raise ChatError("'price_msat' must be the price shown, in millisatoshis.")
    return price


def refusal_text(refusal: AnswerRefused) -> str:
    if refusal.code == RefusalCode.CONTEXT_LENGTH_EXCEEDED:  # older ones are left out: it's this
        return f"{refusal} Shorten the question to go on."
    if refusal.code == RefusalCode.OVERLOADED:
        return "The model is busy answering others; try again in a moment."
    return str(refusal)


def _wants_title(conversation: Conversation) -> bool:
    """After an answer of the first two exchanges (the first may have been stopped), unless
    the model or the member has named it already."""
    conversation.refresh_from_db(fields=["title_source"])
    early = conversation.messages.count() <= TITLE_EXCHANGES * 2
    return early and conversation.title_source == Conversation.TitleSource.QUESTION


def json_object(body: bytes) -> dict[str, Any]:
    """A request from the chat's script, checked as /v1 checks its bodies."""
    try:
        data = load_json(body)
    except OpenAIError as error:
        raise ChatError(str(error)) from None
    if not isinstance(data, dict):
        raise ChatError("The request must be a JSON object.")
    return data


def _question(data: dict[str, Any]) -> str:
    return conversations.question_checked(data.get("question"))


def _message_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ChatError("Say which question is edited.")
    return value


def _settings(
    member: Member, conversation: Conversation | None, data: dict[str, Any]
) -> ChatSettings:
    """The settings sent with the question, else the conversation's (or the member's)."""
    sent = data.get("settings")
    if sent is None:
        return chat_settings.settings_of(conversation, member)
    if not isinstance(sent, dict):
        raise ChatError("'settings' must be an object.")
    try:
        return chat_settings.settings_checked(sent)
    except chat_settings.SettingsError as error:
        raise ChatError(str(error)) from None


def _private_history(value: Any) -> list[Message]:
    if value is None or value == []:
        return []
    try:
        return parse_messages(value)
    except OpenAIError as error:
        raise ChatError(str(error)) from None


def _line(**event: Any) -> bytes:
    return json.dumps(event).encode() + b"\n"
