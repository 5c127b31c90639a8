"""How a conversation is answered: its system prompt and sampling, over the member's defaults.

A member sets defaults on the settings page; a conversation keeps its own once changed in the
chat. Whatever is not set on the conversation follows the member's defaults as they are now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.identity.models import Member
from apps.inference.chat_request import MAX_TOKENS_LIMIT, TEMPERATURE_RANGE, TOP_P_RANGE
from apps.inference.models import ChatPreferences, Conversation

MAX_SYSTEM_PROMPT_CHARS = 8_000


class SettingsError(ValueError):
    """A setting out of range; the message names it, and nothing was changed."""


@dataclass(frozen=True)
class ChatSettings:
    system_prompt: str
    temperature: float
    top_p: float
    max_tokens: int | None  # None: the engine's default (settings.ENGINE_DEFAULT_MAX_TOKENS)

    @property
    def answer_tokens(self) -> int:
        return self.max_tokens or int(settings.ENGINE_DEFAULT_MAX_TOKENS)


def defaults_of(member: Member) -> ChatSettings:
    preferences = ChatPreferences.objects.filter(member=member).first() or ChatPreferences()
    return ChatSettings(
        system_prompt=preferences.system_prompt,
        temperature=preferences.temperature,
        top_p=preferences.top_p,
        max_tokens=preferences.max_tokens,
    )


def defaults_set(member: Member, form: Mapping[str, Any]) -> ChatSettings:
    """The member's defaults for new conversations, from a form; all fields or none change."""
    chosen = settings_checked(form)
    ChatPreferences.objects.update_or_create(
        member=member,
        defaults={
            "system_prompt": chosen.system_prompt,
            "temperature": chosen.temperature,
            "top_p": chosen.top_p,
            "max_tokens": chosen.max_tokens,
        },
    )
    return chosen


def settings_of(conversation: Conversation | None, member: Member) -> ChatSettings:
    """What answers in this conversation are made with (a new one: the member's defaults)."""
    defaults = defaults_of(member)
    if conversation is None:
        return defaults
    own_tokens = conversation.max_tokens
    return ChatSettings(
        system_prompt=_first(conversation.system_prompt, defaults.system_prompt),
        temperature=_first(conversation.temperature, defaults.temperature),
        top_p=_first(conversation.top_p, defaults.top_p),
        max_tokens=own_tokens if own_tokens is not None else defaults.max_tokens,
    )


def conversation_settings_set(conversation: Conversation, chosen: ChatSettings) -> None:
    """Keep on the conversation what differs from the member's defaults; the rest follows them."""
    defaults = defaults_of(conversation.member)
    conversation.system_prompt = _own(chosen.system_prompt, defaults.system_prompt)
    conversation.temperature = _own(chosen.temperature, defaults.temperature)
    conversation.top_p = _own(chosen.top_p, defaults.top_p)
    conversation.max_tokens = _own(chosen.max_tokens, defaults.max_tokens)
    conversation.save(update_fields=["system_prompt", "temperature", "top_p", "max_tokens"])


def settings_checked(form: Mapping[str, Any]) -> ChatSettings:
    """Settings from a form or a JSON object, each checked; a bad one raises SettingsError."""
    return ChatSettings(
        system_prompt=_prompt(form.get("system_prompt")),
        temperature=_temperature(form.get("temperature")),
        top_p=_top_p(form.get("top_p")),
        max_tokens=_tokens(form.get("max_tokens")),
    )


def settings_errors(form: Mapping[str, Any]) -> dict[str, str]:
    """What is wrong with each bad field of a settings form, by field; empty when all are good.

    A page shows every mistake at once, beside its field, rather than one per try."""
    errors = {}
    for field, check in _CHECKS.items():
        try:
            check(form.get(field))
        except SettingsError as error:
            errors[field] = str(error)
    return errors


def _prompt(value: Any) -> str:
    prompt = value or ""
    if isinstance(prompt, str):
        prompt = prompt.replace("\r\n", "\n")  # a browser sends a textarea's line ends as CRLF
    if not isinstance(prompt, str) or len(prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise SettingsError(
            f"The system prompt may be at most {MAX_SYSTEM_PROMPT_CHARS:,} characters."
        )
    return prompt.strip()


def _temperature(value: Any) -> float:
    return _number(value, "Temperature", *TEMPERATURE_RANGE)


def _top_p(value: Any) -> float:
    return _number(value, "Top p", *TOP_P_RANGE)


def _number(value: Any, name: str, low: float, high: float) -> float:
    try:
        if isinstance(value, bool):  # JSON true is not 1.0
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number from {low:g} to {high:g}.") from None
    if not low <= number <= high:  # also refuses nan
        raise SettingsError(f"{name} must be a number from {low:g} to {high:g}.")
    return number


def _tokens(value: Any) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    # isdecimal, not isdigit: int() refuses "²"; the length keeps int() off huge strings.
    if not text.isdecimal() or len(text) > 9 or not 1 <= int(text) <= MAX_TOKENS_LIMIT:
        raise SettingsError(
            f"The longest answer must be a whole number of tokens from 1 to {MAX_TOKENS_LIMIT:,}, "
            "or empty for the node's default."
        )
    return int(text)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "system_prompt": _prompt,
    "temperature": _temperature,
    "top_p": _top_p,
    "max_tokens": _tokens,
}


def _first(own: Any, default: Any) -> Any:
    return own if own is not None else default


def _own(chosen: Any, default: Any) -> Any:
    return None if chosen == default else chosen
