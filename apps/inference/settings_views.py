"""The member's chat settings page: defaults for new conversations, long conversations, keeping."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from apps.identity.access import household_required
from apps.identity.models import Member
from apps.inference import chat_preferences, conversations
from apps.inference.chat_preferences import Preferences, PreferencesRefused
from apps.inference.chat_request import MAX_TOKENS_LIMIT
from apps.inference.chat_settings import MAX_SYSTEM_PROMPT_CHARS
from apps.inference.models import ChatPreferences

OVERFLOW_EXPLAINED: dict[str, str] = {
    ChatPreferences.Overflow.LEAVE_OUT: (
        "The model answers without them, and the answer says how many it did not see."
    ),
    ChatPreferences.Overflow.SUMMARISE: (
        "The model writes a short note of them and reads the note in their place; "
        "the note shows at the top of the conversation."
    ),
}
FIELDS = ("system_prompt", "temperature", "top_p", "max_tokens", "overflow", "retention_days")


@never_cache
@require_http_methods(["GET", "POST"])
@household_required
def settings_page(request: HttpRequest) -> HttpResponse:
    member: Member = request.user  # type: ignore[assignment]
    if request.method == "POST":
        try:
            chat_preferences.preferences_set(member, request.POST)
        except PreferencesRefused as refused:
            # What they typed stays in the form, beside what is wrong with it.
            values = {field: request.POST.get(field, "") for field in FIELDS}
            return _page(request, values, refused.errors, status=400)
        messages.success(request, "Saved.")
        return redirect("chat:settings")
    return _page(request, _values(chat_preferences.preferences_of(member)), {})


def _values(preferences: Preferences) -> dict[str, str]:
    defaults = preferences.defaults
    return {
        "system_prompt": defaults.system_prompt,
        "temperature": f"{defaults.temperature:g}",
        "top_p": f"{defaults.top_p:g}",
        "max_tokens": "" if defaults.max_tokens is None else str(defaults.max_tokens),
        "overflow": preferences.overflow,
        "retention_days": str(preferences.retention_days),
    }


def _page(
    request: HttpRequest, values: dict[str, str], errors: dict[str, str], status: int = 200
) -> HttpResponse:
    context = {
        "values": values,
        "errors": errors,
        "max_prompt_chars": MAX_SYSTEM_PROMPT_CHARS,
        "max_prompt_chars_shown": f"{MAX_SYSTEM_PROMPT_CHARS:,}",
        "default_max_tokens": int(settings.ENGINE_DEFAULT_MAX_TOKENS),
        "max_tokens_limit": MAX_TOKENS_LIMIT,
        "overflow_choices": [
            (value, label, OVERFLOW_EXPLAINED.get(value, ""))
            for value, label in ChatPreferences.Overflow.choices
        ],
        "retention_choices": [
            (str(days), label) for days, label in conversations.RETENTION_CHOICES.items()
        ],
    }
    return render(request, "inference/settings.html", context, status=status)
