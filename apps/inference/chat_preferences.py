"""A member's chat preferences as the settings page sets them, all together or not at all:
the defaults for new conversations, what becomes of a long conversation's oldest messages,
and how long conversations are kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from apps.identity.models import Member
from apps.inference import chat_settings, conversations
from apps.inference.chat_settings import ChatSettings, SettingsError
from apps.inference.models import ChatPreferences


class PreferencesRefused(SettingsError):
    """Some fields were bad; `errors` says what is wrong with each, and nothing was changed."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(" ".join(errors.values()))
        self.errors = errors


@dataclass(frozen=True)
class Preferences:
    defaults: ChatSettings
    overflow: str
    retention_days: int


def preferences_of(member: Member) -> Preferences:
    return Preferences(
        defaults=chat_settings.defaults_of(member),
        overflow=conversations.overflow_of(member),
        retention_days=conversations.retention_of(member),
    )


def preferences_set(member: Member, form: Mapping[str, Any]) -> Preferences:
    """Every field is checked before any is saved: one bad field changes nothing at all."""
    errors = chat_settings.settings_errors(form) | _choice_errors(form)
    if errors:
        raise PreferencesRefused(errors)
    chosen = chat_settings.settings_checked(form)
    with transaction.atomic():
        ChatPreferences.objects.update_or_create(
            member=member,
            defaults={
                "system_prompt": chosen.system_prompt,
                "temperature": chosen.temperature,
                "top_p": chosen.top_p,
                "max_tokens": chosen.max_tokens,
                "overflow": form["overflow"],
                "retention_days": int(form["retention_days"]),
            },
        )
        # A shorter retention deletes the conversations now past it, at once.
        conversations.retention_sweep(members=[member])
    return preferences_of(member)


def _choice_errors(form: Mapping[str, Any]) -> dict[str, str]:
    errors = {}
    if form.get("overflow") not in ChatPreferences.Overflow.values:
        errors["overflow"] = "Choose from the list what becomes of the oldest messages."
    # Compared as text, so that only the offered numbers get through (not "²", not "07").
    offered = {str(days) for days in conversations.RETENTION_CHOICES}
    if str(form.get("retention_days")) not in offered:
        errors["retention_days"] = "Choose from the list how long to keep conversations."
    return errors
