"""The Privacy page: what left the node (the owner reads every egress record, a member their
own, each with the exact body sent and the kinds taken out of it), its export as JSON, and the
owner's choices: which detectors are on, whether a local model reads each request first for
names and places, how long the record is kept, the household's words."""

from __future__ import annotations

import json
import re
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.identity.access import household_required, owner_required
from apps.identity.models import Member
from apps.privacy import policy, services, shown
from apps.privacy.detectors import Kind
from apps.privacy.policy import PrivacyError

SHOWN = 100
_WORD_SEPARATORS = re.compile(r"[,\n]")


@never_cache  # bodies sent are what people wrote: no cache keeps them
@require_GET
@household_required
def privacy_page(request: HttpRequest) -> HttpResponse:
    return _page(request)


def _page(request: HttpRequest, status: int = 200, **form: Any) -> HttpResponse:
    """The page; `form` holds what the owner typed and what is wrong with it, after a refusal."""
    member: Member = request.user  # type: ignore[assignment]
    rows = services.egress_rows(member, everyone=member.is_owner, limit=SHOWN + 1)
    chosen = policy.privacy_settings()
    context = {
        "rows": rows[:SHOWN],
        "more": len(rows) > SHOWN,
        "shown": SHOWN,
        "retention_days": chosen.retention_days,
        "kinds": list(shown.KINDS.values()),
        "detectors_on": form.get("detectors_typed", policy.detectors_on()),
        "retention_typed": form.get("retention_typed", chosen.retention_days),
        "settings_error": form.get("settings_error", ""),
        "words_typed": form.get("words_typed", ""),
        "terms_error": form.get("terms_error", ""),
        "terms": policy.terms_list() if member.is_owner else [],
        "model_pass_on": form.get("model_pass_typed", chosen.model_pass),
        "model_pass_model": form.get("model_pass_model_typed", chosen.model_pass_model),
        "local_models": policy.local_model_names() if member.is_owner else [],
    }
    return render(request, "privacy/page.html", context, status=status)


@never_cache
@require_GET
@household_required
def egress_export(request: HttpRequest) -> HttpResponse:
    """Every egress record kept (the owner's whole, a member's own), as a JSON file."""
    member: Member = request.user  # type: ignore[assignment]
    rows = services.egress_all(member, everyone=member.is_owner)
    records = [shown.exported(row) for row in rows]
    response = HttpResponse(
        json.dumps(records, ensure_ascii=False, indent=2), content_type="application/json"
    )
    name = f"sovereign-egress-{timezone.now():%Y-%m-%d}.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_POST
@owner_required
def settings_save(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    detectors = request.POST.getlist("detectors")
    typed = request.POST.get("retention_days", "").strip()
    model_pass = request.POST.get("model_pass") == "on"
    model_pass_model = request.POST.get("model_pass_model", "").strip()
    try:
        days = _whole_days(typed)
        policy.settings_update(
            actor=owner,
            detectors=detectors,
            retention_days=days,
            model_pass=model_pass,
            model_pass_model=model_pass_model,
        )
    except PrivacyError as error:
        # What the owner chose stays in the form, beside what is wrong with it.
        on = frozenset(Kind(kind) for kind in set(detectors) & set(Kind))
        return _page(
            request,
            400,
            detectors_typed=on,
            retention_typed=typed,
            model_pass_typed=model_pass,
            model_pass_model_typed=model_pass_model,
            settings_error=str(error),
        )
    messages.success(request, "Saved.", extra_tags="settings")
    return _back_to("settings")


def _whole_days(typed: str) -> int:
    if not typed.isascii() or not typed.isdigit():
        raise PrivacyError(
            f"Keep the record a whole number of days, from 1 to {policy.MAX_RETENTION_DAYS}."
        )
    return int(typed)


@require_POST
@owner_required
def terms_add(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    typed = request.POST.get("words", "")
    words = [word for word in _WORD_SEPARATORS.split(typed) if word.strip()]
    if not words:
        return _page(request, 400, words_typed=typed, terms_error="Type a word to add.")
    try:
        added = policy.terms_add(words, actor=owner.pubkey)
    except PrivacyError as error:
        return _page(request, 400, words_typed=typed, terms_error=str(error))
    # Counts only: a message may be kept in the session, and the words are private.
    if added:
        messages.success(request, f"Added {_words(len(added))} to the list.", extra_tags="terms")
    else:
        messages.info(request, "Those words are on the list already.", extra_tags="terms")
    return _back_to("terms")


@require_POST
@owner_required
def terms_remove(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    gone = policy.terms_remove(request.POST.getlist("word"), actor=owner.pubkey)
    if gone:
        messages.success(request, f"Removed {_words(len(gone))} from the list.", extra_tags="terms")
    else:
        messages.info(request, "That word was not on the list.", extra_tags="terms")
    return _back_to("terms")


def _back_to(section: str) -> HttpResponse:
    return redirect(f"{reverse('privacy:page')}#{section}")


def _words(count: int) -> str:
    return f"{count} word{'' if count == 1 else 's'}"
