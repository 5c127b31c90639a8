"""What every outside request is redacted by: `policy_now` reads the detectors that are on and
the household's own words in one query, afresh each time, so a change made anywhere (a service,
a plain update in another process) counts for the very next request."""

from __future__ import annotations

from typing import Any

import pytest

from apps.identity.models import Member
from apps.privacy import policy, redaction
from apps.privacy.detectors import Kind

pytestmark = pytest.mark.django_db

EVERY_DETECTOR = [kind.value for kind in Kind]


def sent(text: str) -> str:
    leaving = redaction.outbound([{"role": "user", "content": text}], trusted=False)
    return leaving.messages[0]["content"]


def test_the_policy_is_read_in_one_query(owner: Any, django_assert_num_queries: Any) -> None:
    policy.terms_add(["Lindenweg"], actor="owner")

    with django_assert_num_queries(1):
        read = policy.policy_now()

    assert read.enabled == frozenset(Kind)
    assert read.terms.words == frozenset({"Lindenweg"})


def test_without_settings_kept_every_detector_is_on(db: None) -> None:
    assert policy.policy_now().enabled == frozenset(Kind)


def test_the_owners_words_count_from_the_next_request(owner: Any) -> None:
    assert sent("We live at Lindenweg, near Acme Widgets.") == (
        "We live at Lindenweg, near Acme Widgets."
    )

    policy.terms_add(["Lindenweg", "Acme Widgets"], actor="owner")
    assert sent("We live at Lindenweg, near Acme Widgets.") == "We live at [TERM_1], near [TERM_2]."

    policy.terms_remove(["Acme Widgets"], actor="owner")
    assert (
        sent("We live at Lindenweg, near Acme Widgets.")
        == "We live at [TERM_1], near Acme Widgets."
    )


def test_members_names_count_however_they_were_changed(owner: Any, member: Any) -> None:
    # A profile refresh writes with a plain update (no signals): nothing may hold the old names.
    Member.objects.filter(pk=member.pk).update(name="Jörg Müller", profile_names=["Jörg", "jm"])
    assert policy.policy_now().terms.names >= {"Jörg Müller", "Jörg", "jm"}
    assert sent("Ask Jörg Müller.") == "Ask [NAME_1]."

    Member.objects.filter(pk=member.pk).update(is_active=False)
    assert not policy.policy_now().terms.names & {"Jörg Müller", "Jörg", "jm"}
    assert sent("Ask Jörg Müller.") == "Ask Jörg Müller."


def test_only_the_strings_of_kept_profile_names_are_words(owner: Any) -> None:
    Member.objects.filter(pk=owner.pk).update(name="", profile_names=["Anna", "", 7, None, ["x"]])

    assert "Anna" in policy.policy_now().terms.names
    assert "" not in policy.policy_now().terms.names


def test_a_detector_turned_off_counts_from_the_next_request(owner: Any) -> None:
    assert sent("Mail anna@example.org.") == "Mail [EMAIL_1]."

    policy.settings_update(
        actor=owner, detectors=[k for k in EVERY_DETECTOR if k != "email"], retention_days=30
    )

    assert policy.detectors_on() == frozenset(Kind) - {Kind.EMAIL}
    assert sent("Mail anna@example.org.") == "Mail anna@example.org."
