"""The dashboard's chat: pages rendered by Django, answers streamed to chat.js as JSON lines."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.identity.access import household_required
from apps.identity.models import Member, Role
from apps.inference import conversations
from apps.inference.answering import (
    AnswerRefused,
    Events,
    Sampling,
    answer_collected,
    open_answer,
    provenance,
)
from apps.inference.chat_request import OpenAIError, parse_messages, read_body
from apps.inference.context_fit import Overflow
from apps.inference.conversations import ChatError
from apps.inference.markdown import render_markdown
from apps.inference.models import ChatPreferences, Conversation, LocalModel, context_note

# Nothing on the chat page may run but our own script, whatever an answer contains.
CHAT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def with_policy(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = CHAT_POLICY
        return response

    return wrapped


@never_cache
@household_required
@with_policy
def chat_page(
    request: HttpRequest, conversation_id: int | None = None, private: bool = False
) -> HttpResponse:
    member: Member = request.user  # type: ignore[assignment]
    conversation = None
    if conversation_id is not None:
        try:
            conversation = conversations.conversation_of(member, conversation_id)
        except ChatError:
            raise Http404("There is no such conversation.") from None
    models = list(LocalModel.objects.order_by("name"))
    context = {
        "conversation": conversation,
        "chat_messages": conversation.messages.all() if conversation else [],
        "conversations": conversations.conversations_of(member),
        "models": models,
        "model_chosen": _model_chosen(conversation, models),
        "private": private,
        "retention_days": conversations.retention_of(member),
        "retention_choices": conversations.RETENTION_CHOICES.items(),
        "overflow": conversations.overflow_of(member),
        "overflow_choices": ChatPreferences.Overflow.choices,
    }
    return render(request, "inference/chat.html", context)


def _model_chosen(conversation: Conversation | None, models: list[LocalModel]) -> str:
    """The model that answered last in this conversation, else the one added first: a model
    added later never silently becomes everyone's default."""
    names = {model.name for model in models}
    if conversation is not None:
        last = conversation.messages.exclude(model_name="").order_by("-id").first()
        if last is not None and last.model_name in names:
            return last.model_name
    first = min(models, key=lambda model: (model.added_at, model.pk), default=None)
    return first.name if first is not None else ""


@require_POST
@household_required
def conversation_delete(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        conversations.conversation_delete(request.user, conversation_id)  # type: ignore[arg-type]
    except ChatError as error:
        messages.error(request, str(error))
    return redirect("chat:new")


@require_POST
@household_required
def retention(request: HttpRequest) -> HttpResponse:
    try:
        conversations.retention_set(request.user, request.POST.get("days"))  # type: ignore[arg-type]
    except ChatError as error:
        messages.error(request, str(error))
    return _back(request)


@require_POST
@household_required
def overflow(request: HttpRequest) -> HttpResponse:
    try:
        conversations.overflow_set(request.user, request.POST.get("overflow"))  # type: ignore[arg-type]
    except ChatError as error:
        messages.error(request, str(error))
    return _back(request)


def _back(request: HttpRequest) -> HttpResponse:
    back = request.POST.get("back", "")
    # Only back to a page of this node: a form posted from elsewhere must not send people off.
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = "chat:new"
    return redirect(back)


@require_POST
async def ask(request: HttpRequest) -> HttpResponseBase:
    """Stream one answer: {"event": "start"|"token"|"done"|"error", ...} per line."""
    member = await request.auser()
    if not member.is_authenticated or member.role not in (Role.OWNER, Role.MEMBER):
        return JsonResponse({"error": "Log in as a member of the household."}, status=403)
    try:
        turn = await sync_to_async(Turn.from_request)(member, read_body(request))
        first, events = await turn.open()
    except (ChatError, OpenAIError) as error:
        return JsonResponse({"error": str(error)}, status=400)
    except AnswerRefused as refusal:
        return JsonResponse({"error": _refusal_text(refusal)}, status=refusal.status)
    response = StreamingHttpResponse(
        turn.stream(first, events), content_type="application/x-ndjson"
    )
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


@require_POST
@household_required
def answer_stopped(request: HttpRequest) -> HttpResponse:
    """After Stop the page says what it had shown, and only that is kept of the answer."""
    try:
        data = json.loads(request.body)
        trimmed = conversations.answer_trim(
            request.user,  # type: ignore[arg-type]
            data.get("conversation"),
            data.get("shown"),
        )
    except (ValueError, AttributeError):
        return JsonResponse({"error": "The request is not a JSON object."}, status=400)
    except ChatError as error:
        return JsonResponse({"error": str(error)}, status=400)
    if not trimmed:
        return JsonResponse({"error": "The stopped answer is not saved yet."}, status=409)
    return JsonResponse({"kept": len(data["shown"])})


def _refusal_text(refusal: AnswerRefused) -> str:
    if refusal.code == "context_length_exceeded":  # older messages are left out: it is the question
        return f"{refusal} Shorten the question to go on."
    if refusal.code == "overloaded":
        return "The model is busy answering others; try again in a moment."
    return str(refusal)


class Turn:
    """One question and its answer, in a stored conversation or a private one (stored nowhere)."""

    def __init__(self, member: Member, model: LocalModel, question: str) -> None:
        self.member, self.model, self.question = member, model, question
        self.stored = True
        self.conversation: Conversation | None = None
        self.earlier: list[dict[str, str]] = []
        self.covered = 0  # messages of the conversation that `earlier` holds a note of
        self.summarise = False  # the member wants a note of what no longer fits
        self.sampling = Sampling(
            max_tokens=settings.ENGINE_DEFAULT_MAX_TOKENS,
            temperature=0.7,
            top_p=0.95,
            seed=secrets.randbelow(2**31),  # recorded, so the same answer can be had again
        )

    @classmethod
    def from_request(cls, member: Member, body: bytes) -> Turn:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ChatError("The request is not JSON.") from None
        if not isinstance(data, dict):
            raise ChatError("The request must be a JSON object.")
        model = LocalModel.objects.filter(name=str(data.get("model", ""))).first()
        if model is None:
            raise ChatError("Choose a model from the list.")
        turn = cls(member, model, conversations.question_checked(data.get("question")))
        if data.get("private") is True:
            turn.stored = False
            turn.earlier = _private_history(data.get("history"))
        elif data.get("conversation") is not None:
            turn.conversation = conversations.conversation_of(member, data["conversation"])
            turn.earlier = conversations.history(turn.conversation)
            turn.covered = turn.conversation.summary_covers
        if turn.stored:
            turn.summarise = conversations.overflow_of(member) == ChatPreferences.Overflow.SUMMARISE
        return turn

    async def open(self) -> tuple[dict[str, Any], Events]:
        """Ask the engine; the question is stored once the engine has taken it."""
        question = {"role": "user", "content": self.question}
        opened = await open_answer(
            self.model,
            [*self.earlier, question],
            self.sampling,
            user=str(self.member.pk),
            overflow=Overflow.DROP_OLDEST,  # a conversation goes on; the answer says what it missed
        )
        if self.stored:
            await sync_to_async(self._question_save)()
        return opened

    def _question_save(self) -> None:
        if self.conversation is None:
            self.conversation = conversations.conversation_start(self.member, self.question)
        conversations.question_save(self.conversation, self.question)

    async def stream(self, first: dict[str, Any], events: Events) -> AsyncIterator[bytes]:
        parts: list[str] = []
        finished = False
        try:
            if self.conversation is not None:
                yield _line(event="start", conversation=self.conversation.pk,
                            title=self.conversation.title)  # fmt: skip
            event = first
            while event["event"] == "token":
                parts.append(event["text"])
                yield _line(event="token", text=event["text"])
                event = await anext(events)
            finished = True
            yield await self._end("".join(parts), event)
            dropped = int(event.get("dropped_messages", 0))
            if self.summarise and self.conversation is not None and dropped > 0:
                yield await self._summarise(self.covered + dropped)  # after the answer: none waits
        finally:
            await events.aclose()  # a page that left, or Stop: the generation ends at once
            if not finished and self.conversation is not None:
                save = sync_to_async(self._answer_save)("".join(parts), "cancelled")
                await asyncio.shield(save)

    async def _end(self, text: str, event: dict[str, Any]) -> bytes:
        if event["event"] == "error":
            if self.conversation is not None:
                await sync_to_async(self._answer_save)(text, "error")
            return _line(event="error", message=event["message"])
        dropped = int(event.get("dropped_messages", 0))
        if self.conversation is not None:
            await sync_to_async(self._answer_save)(text, event["finish_reason"], dropped)
        return _line(event="done", finish_reason=event["finish_reason"],
                     html=render_markdown(text),
                     provenance=provenance(self.model, self.sampling),
                     context_note=context_note(self.covered + dropped,
                                               self.covered))  # fmt: skip

    def _answer_save(self, text: str, finish_reason: str, dropped: int = 0) -> None:
        """`dropped`: what the engine left out of what it was sent, which starts after the
        messages the note covers (an answer that did not finish was not told)."""
        assert self.conversation is not None
        conversations.answer_save(
            self.conversation,
            text,
            provenance(self.model, self.sampling),
            finish_reason,
            left_out=self.covered + dropped,
            summarised=self.covered,
        )

    async def _summarise(self, covers: int) -> bytes:
        """Ask the model for a note of the first `covers` messages, for the turns to come."""
        assert self.conversation is not None
        prompt = await sync_to_async(conversations.summary_prompt)(self.conversation, covers)
        sampling = Sampling(
            max_tokens=max(16, settings.ENGINE_CONTEXT_PER_SLOT // 8),  # the note's share
            temperature=0.0,
            top_p=1.0,
            seed=0,
        )
        try:
            first, events = await open_answer(
                self.model, prompt, sampling, user=str(self.member.pk),
                overflow=Overflow.DROP_OLDEST,
            )  # fmt: skip
        except AnswerRefused:
            return _line(event="summary", covers=self.covered)  # the next turn tries again
        text, last = await answer_collected(first, events)
        saved = last["event"] == "done" and await sync_to_async(conversations.summary_save)(
            self.conversation, text, covers=covers, was=self.covered
        )
        return _line(event="summary", covers=covers if saved else self.covered)


def _private_history(value: Any) -> list[dict[str, str]]:
    if value is None or value == []:
        return []
    try:
        return parse_messages(value)
    except OpenAIError as error:
        raise ChatError(str(error)) from None


def _line(**event: Any) -> bytes:
    return json.dumps(event).encode() + b"\n"
