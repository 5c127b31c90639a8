"""The egress record on the Privacy page: the owner reads every request that left the node, a
member their own, each with the exact body sent (escaped, its placeholders marked) and the kinds
taken out of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from apps.privacy import services
from apps.privacy.models import Egress

pytestmark = pytest.mark.django_db
HASH = "ab" * 32


def sent(
    member: Any,
    body: str,
    found: dict[str, int] | None = None,
    redacted: bool = True,
    **ended: Any,
) -> int:
    egress_id = services.egress_begin(
        services.Outgoing(
            member_id=member.pk if member else None,
            origin="chat",
            provider="ppq",
            url="https://api.ppq.ai/v1/chat/completions",
            model="ppq/strong-1",
            body=body,
            request_id=body[:60],
            found=found or {},
            redacted=redacted,
        )
    )
    if ended:
        services.egress_end(egress_id, **ended)
    return egress_id


def test_the_owner_sees_everyones_requests_with_cost_proof_and_body(
    owner_client: Client, owner: Any, member: Any
) -> None:
    sent(owner, '{"question": "owner asks"}')
    sent(
        member,
        '{"question": "member asks"}',
        outcome="answered",
        cost_msat=21_000,
        payment_hash=HASH,
    )

    page = owner_client.get("/privacy/").content.decode()

    assert "owner asks" in page and "member asks" in page
    assert member.display_name in page and owner.display_name in page
    assert "21 sat" in page and "answered" in page and "under way" in page
    assert f'<code title="{HASH}">{HASH[:12]}…</code>' in page
    assert "https://api.ppq.ai/v1/chat/completions" in page
    assert "You see everyone's." in page


def test_a_member_sees_only_their_own(member_client: Client, owner: Any, member: Any) -> None:
    sent(owner, '{"question": "the owner\'s secret plans"}')
    sent(member, '{"question": "member asks"}')

    page = member_client.get("/privacy/").content.decode()

    assert "member asks" in page and "secret plans" not in page
    assert '<a href="/privacy/" aria-current="page">Privacy</a>' in page  # in the navigation


def test_the_body_is_shown_escaped_exactly_as_sent(owner_client: Client, owner: Any) -> None:
    body = '{"messages": [{"role": "user", "content": "<script>alert(1)</script> & \\"x\\""}]}'
    sent(owner, body)

    page = owner_client.get("/privacy/").content.decode()

    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; \\&quot;x\\&quot;" in page
    assert f"({len(body)} characters)" in page


def test_the_newest_hundred_are_shown_with_a_note(owner_client: Client, owner: Any) -> None:
    for n in range(102):
        sent(owner, f'{{"n": {n}}}')

    page = owner_client.get("/privacy/").content.decode()

    assert "The newest 100 are shown; the export has them all." in page
    assert page.count('class="card egress-record"') == 100
    assert "{&quot;n&quot;: 101}" in page and "{&quot;n&quot;: 1}" not in page


def test_nothing_sent_says_so_and_friends_and_visitors_are_kept_out(
    member_client: Client, friend_client: Client
) -> None:
    assert "Nothing has left the node for you." in member_client.get("/privacy/").content.decode()
    assert friend_client.get("/privacy/").status_code == 403
    assert Client().get("/privacy/").status_code == 302
    assert not Egress.objects.exists()


def chat_body(question: str) -> str:
    """A body as the node sends it: the conversation's messages, as JSON."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": question},
    ]
    return json.dumps({"model": "strong-1", "messages": messages}, ensure_ascii=False)


def test_placeholders_are_marked_and_the_kinds_taken_out_are_counted(
    owner_client: Client, owner: Any
) -> None:
    body = chat_body("Mail [EMAIL_1] or call [PHONE_1], <b>[EMAIL_1]</b> again")
    egress_id = sent(owner, body, found={"email": 2, "phone": 1})

    page = owner_client.get("/privacy/").content.decode()

    record = page[page.index(f'id="egress-{egress_id}"') :]
    marked = '<mark class="placeholder">[EMAIL_1]</mark>'
    assert f"&lt;b&gt;{marked}&lt;/b&gt; again" in record  # escaped around the mark
    assert '<mark class="placeholder">[PHONE_1]</mark>' in record
    assert '<span class="found-kind">2 e-mail addresses</span>' in record
    assert '<span class="found-kind">1 phone number</span>' in record
    # The last question, as sent, above the whole body.
    assert f"Last message, as sent: </span>Mail {marked} or call" in record


def test_a_trusted_providers_record_says_nothing_was_redacted(
    owner_client: Client, owner: Any
) -> None:
    sent(owner, chat_body("ana@example.org wrote [EMAIL_1] herself"), redacted=False)
    sent(owner, chat_body("what is a sat"))

    page = owner_client.get("/privacy/").content.decode()

    assert page.count("trusted provider — nothing redacted") == 1
    assert page.count("nothing private found") == 1
    # Sent unredacted, it has no placeholders: what looks like one is what was written.
    assert '<mark class="placeholder">' not in page.split('id="records"')[1]
    assert "ana@example.org wrote [EMAIL_1] herself" in page


def test_the_kinds_are_shown_never_a_value_the_record_does_not_hold(
    owner_client: Client, owner: Any
) -> None:
    sent(owner, chat_body("hello"), found={"email": 1, "bank_statement": 3})

    page = owner_client.get("/privacy/").content.decode()

    assert '<span class="found-kind">1 e-mail address</span>' in page
    assert '<span class="found-kind">3 × bank statement</span>' in page  # a kind added later


def test_the_old_address_leads_to_the_privacy_page(owner_client: Client) -> None:
    response = owner_client.get("/privacy/egress/")
    assert response.status_code == 302 and response["Location"] == "/privacy/"
