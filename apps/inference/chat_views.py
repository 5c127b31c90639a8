"""The dashboard's chat: pages rendered by Django, answers streamed to chat.js as JSON lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.identity.access import chat_required, may_chat
from apps.identity.models import Member
from apps.inference import (
    chat_crosscheck,
    chat_preview,
    chat_settings,
    conversations,
    crosscheck,
    pipeline,
)
from apps.inference.backends.base import AnswerRefused
from apps.inference.chat_request import MAX_TOKENS_LIMIT, OpenAIError, read_body
from apps.inference.chat_turn import Turn, json_object, refusal_text
from apps.inference.conversations import ChatError
from apps.inference.models import Conversation
from apps.providers import routing

CHAT_REFUSED = "Log in as a member of the household, or a friend something is shared with."
UNDO = "chat.undo"  # the conversation this browser may bring back
EXAMPLE_PROMPTS = (
    "Explain how a Lightning payment finds its way, in three sentences.",
    "Write a short, friendly reminder to the family about recycling day.",
    "Give me a Python function that checks whether a word is a palindrome.",
    "Suggest three dinners I can make with rice, eggs and spinach.",
)
# Nothing on the chat page may run but the node's own script, whatever an answer contains:
# the Content-Security-Policy every page carries (sovereign/middleware.py) sees to that.


@never_cache
@chat_required
def chat_page(
    request: HttpRequest, conversation_id: int | None = None, private: bool = False
) -> HttpResponse:
    member: Member = request.user  # type: ignore[assignment]
    conversations.deleted_purge(member=member)
    conversation = None
    if conversation_id is not None:
        try:
            conversation = conversations.conversation_of(member, conversation_id)
        except ChatError:
            raise Http404("There is no such conversation.") from None
    chosen = chat_settings.settings_of(None if private else conversation, member)
    models = pipeline.choices_for(member, chosen.answer_tokens)
    if private:  # what goes outside is recorded on the node: a private chat stays on it
        models = [model for model in models if not model.outside]
    query = request.GET.get("q", "").strip()[:200]
    listed = conversations.conversations_search(member, query) if query else None
    context = {
        "conversation": conversation,
        "chat_messages": conversation.messages.all() if conversation else [],
        "conversations": listed if query else conversations.conversations_of(member),
        "query": query,
        "undo": _undoable(request, member),
        "models": models,
        "local_models": [model for model in models if not model.outside],
        "outside_models": [m for m in models if m.outside and m.owned_by != routing.PREFIX],
        "routes": _routes_shown(member, models),
        "model_chosen": _model_chosen(conversation, models),
        "private": private,
        "chosen": chosen,
        "examples": EXAMPLE_PROMPTS,
    }
    return render(request, "inference/chat.html", context)


@dataclass(frozen=True)
class RouteShown:
    """A route in the picker: its price, how it picks a model, and whether any of its models
    is outside (what the line under the composer says)."""

    name: str
    price_msat: int
    policy: str
    leaves: bool


def _routes_shown(member: Member, models: list[pipeline.ModelChoice]) -> list[RouteShown]:
    routes = {f"{routing.PREFIX}/{route.name}": route for route in routing.routes_list()}
    outside = pipeline.may_go_outside(member)
    shown = []
    for model in models:
        route = routes.get(model.name) if model.owned_by == routing.PREFIX else None
        if route is not None:
            usable = routing.usable_models(route, outside=outside)
            leaves = any("/" in name for name in usable)  # local models' names have no slash
            shown.append(RouteShown(model.name, model.price_msat, route.policy, leaves))
    return shown


def _undoable(request: HttpRequest, member: Member) -> Conversation | None:
    """The conversation this browser deleted last, while it can still be brought back."""
    pk = request.session.get(UNDO)
    if pk is None:
        return None
    return Conversation.objects.filter(pk=pk, member=member).exclude(deleted_at=None).first()


def _model_chosen(conversation: Conversation | None, models: list[pipeline.ModelChoice]) -> str:
    """The local model that answered last in this conversation, else the local one added
    first: a model added later never silently becomes everyone's default, and a page never
    opens on a model that is paid for or leaves the node (local first: an outside model is
    chosen each time, in the picker or with "Ask ...")."""
    names = {model.name for model in models if not model.outside}
    if conversation is not None:
        last = conversation.messages.exclude(model_name="").order_by("-id").first()
        if last is not None and last.model_name in names:
            return last.model_name
    local = [model for model in models if not model.outside]
    first = min(local, key=lambda model: model.added_at, default=None)
    return first.name if first is not None else ""


@require_POST
@chat_required
def conversation_delete(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        deleted = conversations.conversation_delete(request.user, conversation_id)  # type: ignore[arg-type]
    except ChatError as error:
        messages.error(request, str(error))
    else:
        request.session[UNDO] = deleted.pk
    return redirect("chat:new")


@require_POST
@chat_required
def conversation_restore(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        restored = conversations.conversation_restore(request.user, conversation_id)  # type: ignore[arg-type]
    except ChatError as error:
        messages.error(request, str(error))
        return redirect("chat:new")
    request.session.pop(UNDO, None)
    messages.success(request, f"“{restored.title}” is back.")
    return redirect("chat:conversation", restored.pk)


@require_POST
@chat_required
def conversation_rename(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        renamed = conversations.conversation_rename(
            request.user,  # type: ignore[arg-type]
            conversation_id,
            request.POST.get("title"),
        )
    except ChatError as error:
        messages.error(request, str(error))
        return redirect("chat:conversation", conversation_id)
    messages.success(request, "Renamed.")
    return redirect("chat:conversation", renamed.pk)


@require_POST
async def ask(request: HttpRequest) -> HttpResponseBase:
    """Stream one answer: {"event": "start"|"token"|"done"|"error", ...} per line."""
    member = await request.auser()
    if not isinstance(member, Member) or not await sync_to_async(may_chat)(member):
        return JsonResponse({"error": CHAT_REFUSED}, status=403)
    try:
        turn = await sync_to_async(Turn.from_request)(member, read_body(request))
        events = await turn.open()
    except (ChatError, OpenAIError) as error:
        return JsonResponse({"error": str(error)}, status=400)
    except AnswerRefused as refusal:
        refused = JsonResponse({"error": refusal_text(refusal)}, status=refusal.status)
        if refusal.retry_after is not None:  # a friend's quota: when it resets
            refused["Retry-After"] = str(refusal.retry_after)
        return refused
    response = StreamingHttpResponse(turn.stream(events), content_type="application/x-ndjson")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


@require_POST
async def preview(request: HttpRequest) -> HttpResponse:
    """What a question to an outside model would send (the redacted text), before it is sent:
    nothing is sent, paid or recorded. Refused as the question itself would be."""
    member = await request.auser()
    if not isinstance(member, Member) or not await sync_to_async(may_chat)(member):
        return JsonResponse({"error": CHAT_REFUSED}, status=403)
    try:
        shown = await sync_to_async(chat_preview.preview_asked)(member, read_body(request))
    except (ChatError, OpenAIError) as error:
        return JsonResponse({"error": str(error)}, status=400)
    except AnswerRefused as refusal:
        refused = {"error": refusal_text(refusal), "code": str(refusal.code)}
        return JsonResponse(refused, status=refusal.status)
    response = JsonResponse(shown)
    response["Cache-Control"] = "no-store"  # the member's own words, unredacted where trusted
    return response


@never_cache
@chat_required
def models_priced(request: HttpRequest) -> HttpResponse:
    """The models the member may ask, each outside one with its price for an answer of
    `max_tokens` (the chat's setting; empty: the conversation's default)."""
    member: Member = request.user  # type: ignore[assignment]
    text = request.GET.get("max_tokens", "").strip()
    if text and not (text.isdecimal() and len(text) < 7 and 1 <= int(text) <= MAX_TOKENS_LIMIT):
        return JsonResponse({"error": "'max_tokens' must be a whole number of tokens."}, status=400)
    tokens = int(text) if text else chat_settings.settings_of(None, member).answer_tokens
    models = [_priced(model) for model in pipeline.choices_for(member, tokens)]
    return JsonResponse({"max_tokens": tokens, "models": models})


def _priced(model: pipeline.ModelChoice) -> dict[str, Any]:
    """A model as the page re-prices it; `provider` only for a provider's model."""
    provider = model.owned_by if model.outside and model.owned_by != routing.PREFIX else ""
    shown = {"name": model.name, "provider": provider, "outside": model.outside}
    return {**shown, "price_msat": model.price_msat}


@require_POST
async def cross_check(request: HttpRequest) -> HttpResponse:
    """The last question asked of 2 to 4 models; their answers and the local model's note."""
    member = await request.auser()
    if not isinstance(member, Member) or not await sync_to_async(may_chat)(member):
        return JsonResponse({"error": CHAT_REFUSED}, status=403)
    try:
        asked = await sync_to_async(chat_crosscheck.crosscheck_asked)(member, read_body(request))
        result = await crosscheck.cross_check(
            member,
            asked.messages,
            asked.models,
            asked.sampling,
            origin=pipeline.Origin.CHAT,
            private=asked.private,
            leaving_shown=asked.leaving_shown,
        )
    except (ChatError, OpenAIError, crosscheck.CrossCheckError) as error:
        return JsonResponse({"error": str(error)}, status=400)
    except AnswerRefused as refusal:
        return JsonResponse({"error": refusal_text(refusal)}, status=refusal.status)
    # Rendering several answers' Markdown takes a while: not on the event loop.
    shown = sync_to_async(chat_crosscheck.crosscheck_shown, thread_sensitive=False)
    return JsonResponse(await shown(result))


@require_POST
@chat_required
def answer_stopped(request: HttpRequest) -> HttpResponse:
    """After Stop the page says what it had shown, and only that is kept of the answer."""
    try:
        data = json_object(request.body)
        trimmed = conversations.answer_trim(
            request.user,  # type: ignore[arg-type]
            data.get("conversation"),
            data.get("shown"),
        )
    except ChatError as error:
        return JsonResponse({"error": str(error)}, status=400)
    if not trimmed:
        return JsonResponse({"error": "The stopped answer is not saved yet."}, status=409)
    return JsonResponse({"kept": len(data["shown"])})
