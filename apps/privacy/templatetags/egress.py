from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def readable(code: str) -> str:
    """An outcome's code as people read it: "invoice_refused" is "invoice refused"."""
    return code.replace("_", " ")
