"""The household's own names, taken from members' Nostr profiles (kind 0) on a real relay, kept
out of every outside request with the owner's list of words."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from nostr_sdk import EventBuilder, Keys, Kind

from apps.identity import services
from apps.identity.models import Member
from apps.privacy import policy, redaction
from tests.identity.peers import publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def relays(settings: Any, relay_url: str) -> str:
    settings.NOSTR_RELAYS = [relay_url]
    return relay_url


def member_with_profile(relay_url: str, **profile: str) -> Member:
    """A new member whose kind-0 profile (with exactly these fields) is on the relay, fetched."""
    keys = Keys.generate()
    publish(relay_url, EventBuilder(Kind(0), json.dumps(profile)).finalize(keys))
    member = services.member_add(keys.public_key().to_hex(), "member")
    services.profile_refresh(member.pk)
    member.refresh_from_db()
    return member


def user_says(text: str) -> str:
    leaving = redaction.outbound([{"role": "user", "content": text}], trusted=False)
    return leaving.messages[0]["content"]


def test_a_profile_with_a_name_and_a_display_name_keeps_both(relays: str, owner: Member) -> None:
    member = member_with_profile(relays, name="alice42", display_name="Alice Liddell")

    assert member.name == "alice42"  # the one shown
    assert member.profile_names == ["alice42", "Alice Liddell"]


def test_the_older_display_name_spelling_is_kept_too(relays: str, owner: Member) -> None:
    member = member_with_profile(relays, name="bob", displayName="Bob Builder")

    assert member.profile_names == ["bob", "Bob Builder"]


def test_names_that_look_like_an_npub_are_not_kept(relays: str, owner: Member) -> None:
    member = member_with_profile(
        relays, name=owner.npub, display_name="Carol", displayName=f"nostr:{owner.npub}"
    )

    assert member.profile_names == ["Carol"]
    assert member.name == "Carol"  # shown instead of the key it would pass for


def test_a_profile_without_names_keeps_none(relays: str, owner: Member) -> None:
    member = member_with_profile(relays, about="no name given")

    assert (member.name, member.profile_names) == ("", [])


def test_household_terms_hold_every_active_members_names_and_the_owners_words(
    relays: str, owner: Member
) -> None:
    alice = member_with_profile(relays, name="alice42", display_name="Alice Liddell")
    gone = member_with_profile(relays, name="Mallory")
    Member.objects.filter(pk=gone.pk).update(is_active=False)
    Member.objects.filter(pk=owner.pk).update(name="Olivia")
    policy.terms_add(["Müller", "Lindenstraße"], actor="shell")

    terms = policy.household_terms()

    assert terms.names == {"alice42", "Alice Liddell", "Olivia"}
    assert alice.is_active and "Mallory" not in terms.names
    assert terms.words == {"Müller", "Lindenstraße"}


def test_a_members_display_name_leaves_as_a_name_placeholder(relays: str, owner: Member) -> None:
    member_with_profile(relays, name="alice42", display_name="Alice")

    leaves = user_says("Write a birthday card for Alice. Also thank ALICE's mum and alice42.")

    assert "alice" not in leaves.lower()
    assert re.fullmatch(
        r"Write a birthday card for \[NAME_\d+\]\. Also thank \[NAME_\d+\] mum and \[NAME_\d+\]\.",
        leaves,
    )


def test_an_owners_word_leaves_as_a_term_placeholder_in_every_spelling(owner: Member) -> None:
    policy.terms_add(["Müller"], actor="shell")

    leaves = user_says("Letter to Herr Mueller about Müller's garden, cc MÜLLER.")

    assert re.fullmatch(
        r"Letter to Herr \[TERM_\d+\] about \[TERM_\d+\] garden, cc \[TERM_\d+\]\.", leaves
    )


def test_a_name_that_is_part_of_another_word_is_left(relays: str, owner: Member) -> None:
    member_with_profile(relays, name="Anna")

    assert user_says("Savannah and Hannah went to Annapolis.") == (
        "Savannah and Hannah went to Annapolis."
    )
