from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def sats(msat: int | None) -> str:
    """An amount in msat as people read it: sats, with the msat kept when there are any."""
    if msat is None:
        return ""
    whole, rest = divmod(int(msat), 1000)
    return f"{whole:,} sat" if not rest else f"{whole:,}.{rest:03d} sat"
