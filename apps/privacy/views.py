"""What left the node: the egress record, the owner's whole, a member's own."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from apps.identity.access import household_required
from apps.identity.models import Member
from apps.privacy import services

SHOWN = 100


@never_cache  # bodies sent are what people wrote: no cache keeps them
@household_required
def egress_page(request: HttpRequest) -> HttpResponse:
    member: Member = request.user  # type: ignore[assignment]
    rows = services.egress_rows(member, everyone=member.is_owner, limit=SHOWN + 1)
    context = {"rows": rows[:SHOWN], "more": len(rows) > SHOWN, "shown": SHOWN}
    return render(request, "privacy/egress.html", context)
