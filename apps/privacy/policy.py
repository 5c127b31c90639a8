"""The owner's privacy choices: which detectors are on, the household's own words, how long the
egress record is kept. Changes are audited by count, never by word: the words are private."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.identity.models import Member
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


def policy_now() -> Policy:
    return Policy(detectors_on(), household_terms())


def privacy_settings() -> PrivacySettings:
    chosen, _ = PrivacySettings.objects.get_or_create(pk=1)
    return chosen


def detectors_on() -> frozenset[Kind]:
    off = set(privacy_settings().detectors_off)
    return frozenset(kind for kind in Kind if kind not in off)


def settings_update(*, actor: Member, detectors: Iterable[str], retention_days: int) -> None:
    """Turn on exactly `detectors` (the others off) and keep the record `retention_days`."""
    wanted = set(detectors)
    unknown = sorted(wanted - set(Kind))
    if unknown:
        raise PrivacyError(f"There is no detector named {', '.join(unknown)}.")
    if not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise PrivacyError(f"Keep the record between 1 and {MAX_RETENTION_DAYS} days.")
    off = sorted(kind.value for kind in Kind if kind not in wanted)
    with transaction.atomic():
        chosen = privacy_settings()
        chosen.detectors_off = off
        chosen.retention_days = retention_days
        chosen.save()
        audit_record(
            "privacy_settings_changed",
            actor=f"member:{actor.pk}",
            detail=f"detectors off: {', '.join(off) or 'none'}; record kept {retention_days} days",
        )


# The household's own words ------------------------------------------------------------------


def household_terms() -> Terms:
    """Members' names and display names from their Nostr profiles, and the owner's list."""
    names: set[str] = set()
    for name, others in Member.objects.filter(is_active=True).values_list("name", "profile_names"):
        names.update(other for other in [name, *others] if other)
    return Terms(names=frozenset(names), words=frozenset(terms_list()))


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
