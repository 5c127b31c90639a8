"""The owner's choices on the Privacy page (which detectors are on, how long the egress record is
kept, the household's own words), the record's export as JSON, and the hourly retention sweep."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import action_label
from apps.privacy import policy, services
from apps.privacy.detectors import Kind
from apps.privacy.models import Egress, PrivacySettings
from apps.privacy.tasks import egress_retention_sweep

pytestmark = pytest.mark.django_db
HASH = "cd" * 32
EVERY_KIND = [kind.value for kind in Kind]


def sent(member: Any, body: str, **ended: Any) -> int:
    egress_id = services.egress_begin(
        services.Outgoing(
            member_id=member.pk if member else None,
            origin="api",
            provider="ppq",
            url="https://api.ppq.ai/v1/chat/completions",
            model="ppq/strong-1",
            body=body,
            request_id=body[:60],
            found={"email": 1},
            redacted=True,
        )
    )
    if ended:
        services.egress_end(egress_id, **ended)
    return egress_id


# Detectors and retention ------------------------------------------------------------------


def test_the_owner_turns_detectors_off_and_keeps_the_record_shorter(
    owner_client: Client,
) -> None:
    wanted = [kind for kind in EVERY_KIND if kind not in ("phone", "ip")]

    response = owner_client.post("/privacy/settings", {"detectors": wanted, "retention_days": "30"})

    assert response.status_code == 302 and response["Location"] == "/privacy/#settings"
    assert policy.detectors_on() == frozenset(Kind) - {Kind.PHONE, Kind.IP}
    assert policy.privacy_settings().retention_days == 30
    page = owner_client.get("/privacy/").content.decode()
    assert (
        page.index('id="settings"')
        < page.index('role="status">Saved.</p>')
        < page.index('id="terms"')
    )
    assert 'value="phone" id="detector-phone" aria-describedby="detector-phone-hint">' in page
    assert 'value="email" id="detector-email" aria-describedby="detector-email-hint" checked>' in (
        page
    )
    assert 'value="30"' in page and "Each record is kept 30 days, then deleted." in page
    event = AuditEvent.objects.get(action="privacy_settings_changed")
    assert event.detail == "detectors off: ip, phone; record kept 30 days"


@pytest.mark.parametrize(
    ("days", "detectors", "error"),
    [
        ("0", EVERY_KIND, "Keep the record between 1 and 3650 days."),
        ("3651", EVERY_KIND, "Keep the record between 1 and 3650 days."),
        ("ten", EVERY_KIND, "Keep the record a whole number of days, from 1 to 3650."),
        ("", EVERY_KIND, "Keep the record a whole number of days, from 1 to 3650."),
        ("٣٠", EVERY_KIND, "Keep the record a whole number of days, from 1 to 3650."),
        ("7.5", EVERY_KIND, "Keep the record a whole number of days, from 1 to 3650."),
        ("30", ["email", "fingerprints"], "There is no detector named fingerprints."),
    ],
)
def test_a_bad_setting_is_shown_and_changes_nothing(
    owner_client: Client, days: str, detectors: list[str], error: str
) -> None:
    before = policy.privacy_settings()

    response = owner_client.post(
        "/privacy/settings", {"detectors": detectors, "retention_days": days}
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert f'role="alert">Nothing was saved: {error}</p>' in page
    assert f'value="{days}"' in page  # what was typed and ticked stays in the form
    for kind in EVERY_KIND:
        ticked = f'id="detector-{kind}" aria-describedby="detector-{kind}-hint" checked>' in page
        assert ticked == (kind in detectors)
    kept = PrivacySettings.objects.get()
    assert (kept.detectors_off, kept.retention_days) == ([], before.retention_days)
    assert not AuditEvent.objects.filter(action="privacy_settings_changed").exists()


def test_only_the_owner_sees_and_changes_the_settings_and_the_words(
    member_client: Client, friend_client: Client
) -> None:
    page = member_client.get("/privacy/").content.decode()
    assert 'id="settings"' not in page and 'id="terms"' not in page
    for path, form in [
        ("/privacy/settings", {"detectors": ["email"], "retention_days": "1"}),
        ("/privacy/terms/add", {"words": "Müller"}),
        ("/privacy/terms/remove", {"word": "Müller"}),
    ]:
        assert member_client.post(path, form).status_code == 403
        assert friend_client.post(path, form).status_code == 403
        assert Client().post(path, form).status_code == 302  # to log in
    assert policy.detectors_on() == frozenset(Kind) and policy.terms_list() == []


# The household's words --------------------------------------------------------------------


def test_the_owner_adds_several_words_and_the_audit_names_none(owner_client: Client) -> None:
    typed = "Müller, Hauptstraße\r\n St. Mary's  School \n\n,Müller"

    response = owner_client.post("/privacy/terms/add", {"words": typed})

    assert response.status_code == 302 and response["Location"] == "/privacy/#terms"
    assert policy.terms_list() == ["Hauptstraße", "Müller", "St. Mary's School"]
    page = owner_client.get("/privacy/").content.decode()
    assert page.index('id="terms"') < page.index("Added 3 words to the list.")  # beside the list
    assert 'aria-label="Remove St. Mary&#x27;s School"' in page
    assert '<span class="term">Hauptstraße</span>' in page
    event = AuditEvent.objects.get(action="privacy_terms_added")
    assert event.detail == "3 word(s)"
    audit = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert "Müller" not in audit and "Hauptstra" not in audit and "Mary" not in audit

    again = owner_client.post("/privacy/terms/add", {"words": "müller, Müller"})
    assert again.status_code == 302
    assert policy.terms_list() == ["Hauptstraße", "Müller", "St. Mary's School"]  # kept once


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("Müller, x", "A word must have at least 2 letters."),
        ("Müller\n" + "y" * 101, "A word may have at most 100 characters."),
        (" , \n ", "Type a word to add."),
    ],
)
def test_a_bad_word_refuses_them_all_and_keeps_what_was_typed(
    owner_client: Client, typed: str, error: str
) -> None:
    response = owner_client.post("/privacy/terms/add", {"words": typed})

    assert response.status_code == 400
    page = response.content.decode()
    assert f'<p class="error" id="words-error" role="alert">{error}</p>' in page
    assert f'aria-invalid="true">{typed.split(chr(10))[0]}' in page
    assert policy.terms_list() == []
    assert not AuditEvent.objects.filter(action="privacy_terms_added").exists()


def test_the_owner_removes_a_word(owner_client: Client, owner: Any) -> None:
    policy.terms_add(["Müller", "Hauptstraße"], actor=owner.pubkey)

    response = owner_client.post("/privacy/terms/remove", {"word": "Müller"})

    assert response.status_code == 302 and policy.terms_list() == ["Hauptstraße"]
    page = owner_client.get("/privacy/").content.decode()
    assert "Removed 1 word from the list." in page and '<span class="term">Müller' not in page
    assert AuditEvent.objects.get(action="privacy_terms_removed").detail == "1 word(s)"

    owner_client.post("/privacy/terms/remove", {"word": "Müller"})
    assert "That word was not on the list." in owner_client.get("/privacy/").content.decode()
    assert AuditEvent.objects.filter(action="privacy_terms_removed").count() == 1


def test_the_audit_page_names_the_privacy_actions() -> None:
    assert action_label("privacy_settings_changed") == "Privacy settings changed"
    assert action_label("privacy_terms_added") == "Words added to the privacy list"
    assert action_label("privacy_terms_removed") == "Words removed from the privacy list"


# Export -----------------------------------------------------------------------------------


def test_the_owner_exports_every_record_as_a_json_file(
    owner_client: Client, owner: Any, member: Any
) -> None:
    sent(member, '{"q": "[EMAIL_1] asks"}', outcome="answered", cost_msat=21_000, payment_hash=HASH)
    sent(None, '{"q": "the node asks"}')
    sent(owner, '{"q": "owner <asks>"}')

    response = owner_client.get("/privacy/egress.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == (
        f'attachment; filename="sovereign-egress-{timezone.now():%Y-%m-%d}.json"'
    )
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    records = json.loads(response.content)
    assert [record["body"] for record in records] == [
        '{"q": "owner <asks>"}',
        '{"q": "the node asks"}',
        '{"q": "[EMAIL_1] asks"}',
    ]
    members = Egress.objects.order_by("id")[0]
    assert records[2] == {
        "sent_at": members.sent_at.isoformat(),
        "member_npub": member.npub,
        "origin": "api",
        "provider": "ppq",
        "url": "https://api.ppq.ai/v1/chat/completions",
        "model": "ppq/strong-1",
        "body": '{"q": "[EMAIL_1] asks"}',
        "found": {"email": 1},
        "redacted": True,
        "outcome": "answered",
        "cost_msat": 21_000,
        "payment_hash": HASH,
    }
    assert records[1]["member_npub"] is None and records[0]["member_npub"] == owner.npub


def test_a_member_exports_their_own_and_friends_and_visitors_nothing(
    member_client: Client, friend_client: Client, owner: Any, member: Any
) -> None:
    sent(owner, '{"q": "the owner\'s plans"}')
    sent(member, '{"q": "member asks"}')

    records = json.loads(member_client.get("/privacy/egress.json").content)

    assert [record["body"] for record in records] == ['{"q": "member asks"}']
    assert friend_client.get("/privacy/egress.json").status_code == 403
    assert Client().get("/privacy/egress.json").status_code == 302
    assert member_client.post("/privacy/egress.json").status_code == 405


def test_the_page_links_the_export(member_client: Client) -> None:
    page = member_client.get("/privacy/").content.decode()
    assert '<a class="button secondary" href="/privacy/egress.json" download>' in page


# Retention --------------------------------------------------------------------------------


def test_the_hourly_sweep_forgets_records_older_than_the_owner_keeps_them(
    owner: Any,
) -> None:
    policy.settings_update(actor=owner, detectors=EVERY_KIND, retention_days=7)
    now = timezone.now()
    ages = {"old": timedelta(days=7, hours=1), "recent": timedelta(days=6, hours=23)}
    for name, age in ages.items():
        egress_id = sent(owner, name)
        Egress.objects.filter(pk=egress_id).update(sent_at=now - age)
    sent(owner, "just now")

    egress_retention_sweep()

    assert sorted(Egress.objects.values_list("body", flat=True)) == ["just now", "recent"]
    schedule = settings.CELERY_BEAT_SCHEDULE["egress-retention"]
    assert schedule == {"task": "privacy.egress_retention_sweep", "schedule": 3600.0}


def test_a_long_body_is_shown_cut_with_where_the_rest_is(owner_client: Client, owner: Any) -> None:
    sent(owner, '{"messages": [{"role": "user", "content": "' + "a" * 30_000 + 'END"}]}')

    page = owner_client.get("/privacy/").content.decode()
    exported = owner_client.get("/privacy/egress.json")

    assert "export the record to read them all" in page and "aEND" not in page
    assert "aEND" in exported.content.decode()
