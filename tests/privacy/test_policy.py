"""The owner's privacy choices: which detectors are on, how long the egress record is kept, and
the household's own words. A refused choice changes nothing; every change is audited by kind
and count, never by word."""

from __future__ import annotations

from typing import Any

import pytest

from apps.audit.models import AuditEvent
from apps.privacy import policy, redaction
from apps.privacy.detectors import Kind
from apps.privacy.models import PrivacySettings, Term
from apps.privacy.policy import MAX_RETENTION_DAYS, MAX_TERM_LENGTH, PrivacyError

pytestmark = pytest.mark.django_db

EVERY_DETECTOR = [kind.value for kind in Kind]
QUESTION = "Mail anna@example.org or call +49 170 1234567 about the Lindenstraße flat."


def audited(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def leaves(text: str) -> tuple[str, dict[str, int]]:
    leaving = redaction.outbound([{"role": "user", "content": text}], trusted=False)
    return leaving.messages[0]["content"], leaving.found


# --- settings --------------------------------------------------------------------------------


def test_every_detector_is_on_until_the_owner_turns_one_off(owner: Any) -> None:
    assert policy.detectors_on() == frozenset(Kind)

    policy.settings_update(
        actor=owner, detectors=[k for k in EVERY_DETECTOR if k != "phone"], retention_days=30
    )

    assert policy.detectors_on() == frozenset(Kind) - {Kind.PHONE}
    assert policy.privacy_settings().retention_days == 30


def test_an_unknown_detector_is_refused_and_nothing_changes(owner: Any) -> None:
    policy.settings_update(actor=owner, detectors=EVERY_DETECTOR, retention_days=90)

    with pytest.raises(PrivacyError, match="no detector named passport, shoe_size"):
        policy.settings_update(
            actor=owner, detectors=["email", "shoe_size", "passport"], retention_days=7
        )

    chosen = PrivacySettings.objects.get(pk=1)
    assert (chosen.detectors_off, chosen.retention_days) == ([], 90)
    assert len(audited("privacy_settings_changed")) == 1


@pytest.mark.parametrize("days", [0, -1, MAX_RETENTION_DAYS + 1])
def test_a_retention_out_of_bounds_is_refused_and_nothing_changes(owner: Any, days: int) -> None:
    with pytest.raises(PrivacyError, match=f"between 1 and {MAX_RETENTION_DAYS} days"):
        policy.settings_update(actor=owner, detectors=["email"], retention_days=days)

    assert policy.detectors_on() == frozenset(Kind)
    assert policy.privacy_settings().retention_days == 90
    assert audited("privacy_settings_changed") == []


@pytest.mark.parametrize("days", [1, MAX_RETENTION_DAYS])
def test_a_retention_at_the_bounds_is_kept(owner: Any, days: int) -> None:
    policy.settings_update(actor=owner, detectors=EVERY_DETECTOR, retention_days=days)

    assert policy.privacy_settings().retention_days == days


def test_a_settings_change_is_audited_with_detectors_and_days_never_words(owner: Any) -> None:
    policy.terms_add(["Lindenstraße"], actor="shell")

    policy.settings_update(actor=owner, detectors=["email", "term"], retention_days=14)

    (event,) = audited("privacy_settings_changed")
    assert event.actor == f"member:{owner.pk}"
    assert event.detail == (
        "detectors off: address, api_key, bitcoin, card, iban, ip, lightning, name, nostr, "
        "phone; record kept 14 days"
    )


def test_a_detector_turned_off_is_not_applied_to_what_leaves(owner: Any) -> None:
    policy.terms_add(["Lindenstraße"], actor="shell")
    on = [kind for kind in EVERY_DETECTOR if kind not in ("email", "term")]
    policy.settings_update(actor=owner, detectors=on, retention_days=90)

    text, found = leaves(QUESTION)

    assert text == "Mail anna@example.org or call [PHONE_1] about the Lindenstraße flat."
    assert found == {"phone": 1}


def test_with_every_detector_on_each_value_leaves_as_a_placeholder(owner: Any) -> None:
    policy.terms_add(["Lindenstraße"], actor="shell")

    text, found = leaves(QUESTION)

    assert text == "Mail [EMAIL_1] or call [PHONE_1] about the [TERM_1] flat."
    assert found == {"email": 1, "phone": 1, "term": 1}


# --- the owner's words -----------------------------------------------------------------------


def test_terms_are_added_once_with_their_spaces_tidied() -> None:
    added = policy.terms_add(["  Anna   Müller ", "Anna Müller", "Hauptstraße"], actor="shell")

    assert added == ["Anna Müller", "Hauptstraße"]
    assert policy.terms_list() == ["Anna Müller", "Hauptstraße"]


def test_a_word_already_on_the_list_in_another_case_is_not_added_again() -> None:
    policy.terms_add(["Müller"], actor="shell")

    assert policy.terms_add(["MÜLLER", "müller", "Schmidt", "SCHMIDT"], actor="shell") == [
        "Schmidt"
    ]
    assert policy.terms_list() == ["Müller", "Schmidt"]


@pytest.mark.parametrize(
    ("word", "refusal"),
    [("x", "at least 2 letters"), ("   ", "at least 2 letters"), ("y" * 101, "at most 100")],
)
def test_a_word_too_short_or_too_long_is_refused_and_nothing_changes(
    word: str, refusal: str
) -> None:
    assert MAX_TERM_LENGTH == 100
    policy.terms_add(["Müller"], actor="shell")

    with pytest.raises(PrivacyError, match=refusal):
        policy.terms_add(["Schmidt", word, "Weber"], actor="shell")

    assert policy.terms_list() == ["Müller"]
    assert len(audited("privacy_terms_added")) == 1


def test_terms_are_removed_in_any_case_and_only_those_on_the_list() -> None:
    policy.terms_add(["Müller", "Anna Müller", "Hauptstraße"], actor="shell")

    removed = policy.terms_remove(["müller", "anna  müller", "Weber"], actor="shell")

    assert removed == ["Anna Müller", "Müller"]
    assert policy.terms_list() == ["Hauptstraße"]


def test_term_changes_are_audited_by_count_never_by_word() -> None:
    policy.terms_add(["Müller", "Hauptstraße", "St. Mary"], actor="shell")
    policy.terms_add(["Müller"], actor="shell")  # nothing new: nothing to record
    policy.terms_remove(["Müller", "Weber"], actor="member:1")
    policy.terms_remove(["Weber"], actor="shell")

    added, removed = audited("privacy_terms_added"), audited("privacy_terms_removed")
    assert [(e.actor, e.detail) for e in added] == [("shell", "3 word(s)")]
    assert [(e.actor, e.detail) for e in removed] == [("member:1", "1 word(s)")]
    for event in [*added, *removed]:
        written = f"{event.subject} {event.detail}"
        assert not any(word in written for word in ("Müller", "Hauptstraße", "Mary", "Weber"))


def test_a_term_row_does_not_name_its_word() -> None:
    policy.terms_add(["Müller"], actor="shell")

    assert "Müller" not in str(Term.objects.get())


def test_the_list_holds_at_most_max_terms_words_and_a_longer_one_changes_nothing() -> None:
    policy.terms_add([f"Word{number}" for number in range(policy.MAX_TERMS - 1)], actor="shell")

    with pytest.raises(policy.PrivacyError, match="at most 500 words"):
        policy.terms_add(["Müller", "Berg"], actor="shell")
    added = policy.terms_add(["Müller"], actor="shell")

    assert added == ["Müller"]
    assert len(policy.terms_list()) == policy.MAX_TERMS
