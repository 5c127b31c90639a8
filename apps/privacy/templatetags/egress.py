from __future__ import annotations

import re
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from apps.privacy import shown

register = template.Library()

# A placeholder as the vault writes it: `[EMAIL_1]`, `[API_KEY_12]`. Escaping leaves brackets,
# capitals, digits and `_` as they are, so it is found the same in the escaped text.
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_[1-9][0-9]*\]")


@register.filter
def readable(code: str) -> str:
    """An outcome's code as people read it: "invoice_refused" is "invoice refused"."""
    return code.replace("_", " ")


# A body is a whole conversation so far: the page shows its start, the export all of it.
SHOWN_CHARS = 20_000


@register.filter
def placeholders_marked(text: str, redacted: bool = True) -> SafeString:
    """The text escaped, each placeholder in it marked. Text sent unredacted (to a trusted
    provider) has no placeholders: whatever looks like one there is what the person wrote.
    A text longer than SHOWN_CHARS is cut, and says where the rest is."""
    if len(text) > SHOWN_CHARS:
        rest = len(text) - SHOWN_CHARS
        more = f"… {rest:,} more characters: export the record to read them all."
        text = f"{text[:SHOWN_CHARS]}\n{more}"
    escaped = escape(text)
    if not redacted:
        return escaped
    return mark_safe(  # noqa: S308 - built from escaped text and a fixed tag
        _PLACEHOLDER.sub(lambda found: f'<mark class="placeholder">{found.group()}</mark>', escaped)
    )


@register.filter
def found_shown(found: Any) -> list[str]:
    return shown.found_shown(found) if isinstance(found, dict) else []


@register.filter
def last_question(body: str) -> str:
    return shown.last_question(body)
