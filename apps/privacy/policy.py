"""The owner's privacy choices: which detectors are on, the household's own words, how long the
egress record is kept, whether a local model reads each outside request first for names and
places the patterns miss. Changes are audited by count, never by word: the words are private."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.identity.models import Member
from apps.inference.models import LocalModel
from apps.privacy.detectors import Kind
from apps.privacy.models import Egress, PrivacySettings, Term
from apps.privacy.terms import MIN_TERM_LENGTH, Terms

MAX_TERM_LENGTH = Term._meta.get_field("word").max_length or 100
MAX_RETENTION_DAYS = 3650
MAX_TERMS = 500


class PrivacyError(ValueError):
    """A choice that cannot be kept; nothing was changed."""


@dataclass(frozen=True)
class Policy:
    """What the detectors look for in one outside request."""

    enabled: frozenset[Kind]
    terms: Terms
    # The local model that reads the request first for names and places (apps/privacy/
    # model_pass.py); None: the owner has not asked for it. "" when there is no local model to
    # ask: the request is refused, as the pass cannot run.
    model_pass: str | None = None


# Every outside request reads the policy before its first byte leaves: one fixed query, not the
# ORM's four (most of a millisecond added to the first token; see docs/benchmarks.md). Read
# afresh each time, never cached: a word added or a member renamed in another process (the
# web, a worker) counts for the very next request.
_POLICY_SQL = (
    "SELECT 'off', CAST(detectors_off AS TEXT) FROM privacy_privacysettings WHERE id = 1 "
    "UNION ALL SELECT 'pass', model_pass_model FROM privacy_privacysettings "
    "WHERE id = 1 AND model_pass "
    "UNION ALL SELECT 'first model', MIN(name) FROM inference_localmodel "
    "UNION ALL SELECT 'name', name FROM identity_member WHERE is_active "
    "UNION ALL SELECT 'names', CAST(profile_names AS TEXT) FROM identity_member WHERE is_active "
    "UNION ALL SELECT 'word', word FROM privacy_term"
)


def policy_now() -> Policy:
    """What the detectors look for now, and whether a local model reads the request first:
    the model the owner chose, else the first local model by name ("" when there is none)."""
    read: dict[str, set[str]] = {"off": set(), "name": set(), "word": set()}
    model_pass: str | None = None
    first_model = ""
    with connection.cursor() as cursor:
        cursor.execute(_POLICY_SQL)
        for source, value in cursor.fetchall():
            if source in ("off", "names"):
                read["off" if source == "off" else "name"].update(_json_strings(value))
            elif source == "pass":
                model_pass = value
            elif source == "first model":
                first_model = value or ""
            elif value:
                read[source].add(value)
    enabled = frozenset(kind for kind in Kind if kind not in read["off"])
    terms = Terms(names=frozenset(read["name"]), words=frozenset(read["word"]))
    if model_pass is not None:
        model_pass = model_pass or first_model
    return Policy(enabled, terms, model_pass)


def _json_strings(stored: str) -> list[str]:
    """The strings of a JSON list as the database keeps it (a JSONField's text)."""
    listed = json.loads(stored)
    if not isinstance(listed, list):
        return []
    return [item for item in listed if isinstance(item, str) and item]


def privacy_settings() -> PrivacySettings:
    chosen, _ = PrivacySettings.objects.get_or_create(pk=1)
    return chosen


def detectors_on() -> frozenset[Kind]:
    return policy_now().enabled


def local_model_names() -> list[str]:
    """The models the owner may choose for the pass, by name (the first is the default)."""
    return list(LocalModel.objects.order_by("name").values_list("name", flat=True))


def settings_update(
    *,
    actor: Member,
    detectors: Iterable[str],
    retention_days: int,
    model_pass: bool | None = None,
    model_pass_model: str | None = None,
) -> None:
    """Turn on exactly `detectors` (the others off) and keep the record `retention_days`; turn
    the local model's pass on or off and choose its model ("" the first local model by name)
    where given (None: as it was)."""
    wanted = set(detectors)
    unknown = sorted(wanted - set(Kind))
    if unknown:
        raise PrivacyError(f"There is no detector named {', '.join(unknown)}.")
    if not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise PrivacyError(f"Keep the record between 1 and {MAX_RETENTION_DAYS} days.")
    if model_pass_model and not LocalModel.objects.filter(name=model_pass_model).exists():
        raise PrivacyError("There is no local model by that name to read requests for names.")
    off = sorted(kind.value for kind in Kind if kind not in wanted)
    with transaction.atomic():
        chosen = privacy_settings()
        was_on = chosen.model_pass
        chosen.detectors_off = off
        chosen.retention_days = retention_days
        if model_pass is not None:
            chosen.model_pass = model_pass
        if model_pass_model is not None:
            chosen.model_pass_model = model_pass_model
        chosen.save()
        detail = f"detectors off: {', '.join(off) or 'none'}; record kept {retention_days} days"
        if chosen.model_pass or was_on:
            detail += f"; {_model_pass_said(chosen)}"
        audit_record("privacy_settings_changed", actor=f"member:{actor.pk}", detail=detail)


def _model_pass_said(chosen: PrivacySettings) -> str:
    if not chosen.model_pass:
        return "local model's pass off"
    return f"local model's pass on ({chosen.model_pass_model or 'the first local model'})"


# The household's own words ------------------------------------------------------------------


def household_terms() -> Terms:
    """Members' names and display names from their Nostr profiles, and the owner's list."""
    return policy_now().terms


def terms_list() -> list[str]:
    return list(Term.objects.values_list("word", flat=True))


def terms_add(words: Iterable[str], *, actor: str) -> list[str]:
    """The words that were new, as kept (spaces tidied). Words are matched in any case, so a
    word already on the list in another case is not added again. A word too short or too long
    is refused with the others: nothing changes."""
    cleaned = [_term_cleaned(word) for word in words]
    with transaction.atomic():
        known = {word.casefold() for word in terms_list()}
        new: dict[str, str] = {}
        for word in cleaned:
            if word.casefold() not in known:
                new.setdefault(word.casefold(), word)  # the first spelling given is kept
        added = sorted(new.values())
        if len(known) + len(added) > MAX_TERMS:
            raise PrivacyError(
                f"The list holds at most {MAX_TERMS} words ({len(known)} now): every outside "
                "request is checked for each of them."
            )
        Term.objects.bulk_create([Term(word=word) for word in added], ignore_conflicts=True)
        if added:
            audit_record("privacy_terms_added", actor=actor, detail=f"{len(added)} word(s)")
    return added


def terms_remove(words: Iterable[str], *, actor: str) -> list[str]:
    """The words that were on the list, in any case, and are now off it."""
    wanted = {" ".join(str(word).split()).casefold() for word in words}
    with transaction.atomic():
        gone = [word for word in terms_list() if word.casefold() in wanted]
        Term.objects.filter(word__in=gone).delete()
        if gone:
            audit_record("privacy_terms_removed", actor=actor, detail=f"{len(gone)} word(s)")
    return gone


def _term_cleaned(word: str) -> str:
    cleaned = " ".join(str(word).split())
    if len(cleaned) < MIN_TERM_LENGTH:
        raise PrivacyError(f"A word must have at least {MIN_TERM_LENGTH} letters.")
    if len(cleaned) > MAX_TERM_LENGTH:
        raise PrivacyError(f"A word may have at most {MAX_TERM_LENGTH} characters.")
    return cleaned


# Retention --------------------------------------------------------------------------------


def egress_sweep() -> int:
    """Forget egress records older than the owner keeps them; how many were forgotten."""
    cutoff = timezone.now() - timedelta(days=privacy_settings().retention_days)
    deleted, _ = Egress.objects.filter(sent_at__lt=cutoff).delete()
    return deleted
