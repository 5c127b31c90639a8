from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from apps.inference.markdown import render_markdown
from apps.wallet.templatetags.wallet import sats

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    return mark_safe(render_markdown(text))  # noqa: S308 - render_markdown's output is sanitised


@register.filter
def sampling_line(sampling: dict[str, Any] | None) -> str:
    """The sampling parameters an answer was made with, in one line."""
    if not sampling:
        return ""
    shown = [f"{name} {sampling[name]}" for name in ("temperature", "top_p", "seed", "max_tokens")]
    return " · ".join(shown)


@register.filter
def price_line(msat: int) -> str:
    """An outside model's price as the picker shows it: the most one answer may cost."""
    return f"up to {sats(msat)}" if msat else "free"
