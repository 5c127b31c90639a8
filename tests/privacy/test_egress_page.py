"""The egress record page: the owner reads every request that left the node, a member their
own, each with the exact body sent, escaped."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.privacy import services
from apps.privacy.models import Egress

pytestmark = pytest.mark.django_db
HASH = "ab" * 32


def sent(member: Any, body: str, **ended: Any) -> int:
    egress_id = services.egress_begin(
        services.Outgoing(
            member_id=member.pk if member else None,
            origin="chat",
            provider="ppq",
            url="https://api.ppq.ai/v1/chat/completions",
            model="ppq/strong-1",
            body=body,
            request_id=body[:60],
            found={},
            redacted=True,
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

    page = owner_client.get("/privacy/egress/").content.decode()

    assert "owner asks" in page and "member asks" in page
    assert member.display_name in page and owner.display_name in page
    assert "21 sat" in page and "answered" in page and "under way" in page
    assert f'<code title="{HASH}">{HASH[:12]}…</code>' in page
    assert "https://api.ppq.ai/v1/chat/completions" in page
    assert "You see everyone's." in page


def test_a_member_sees_only_their_own(member_client: Client, owner: Any, member: Any) -> None:
    sent(owner, '{"question": "the owner\'s secret plans"}')
    sent(member, '{"question": "member asks"}')

    page = member_client.get("/privacy/egress/").content.decode()

    assert "member asks" in page and "secret plans" not in page
    assert 'href="/privacy/egress/"' in page  # in the navigation


def test_the_body_is_shown_escaped_exactly_as_sent(owner_client: Client, owner: Any) -> None:
    body = '{"messages": [{"role": "user", "content": "<script>alert(1)</script> & \\"x\\""}]}'
    sent(owner, body)

    page = owner_client.get("/privacy/egress/").content.decode()

    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; \\&quot;x\\&quot;" in page
    assert f"({len(body)} characters)" in page


def test_the_newest_hundred_are_shown_with_a_note(owner_client: Client, owner: Any) -> None:
    for n in range(102):
        sent(owner, f'{{"n": {n}}}')

    page = owner_client.get("/privacy/egress/").content.decode()

    assert "The newest 100 are shown." in page
    assert page.count('class="card egress-record"') == 100
    assert "{&quot;n&quot;: 101}" in page and "{&quot;n&quot;: 1}" not in page


def test_nothing_sent_says_so_and_friends_and_visitors_are_kept_out(
    member_client: Client, friend_client: Client
) -> None:
    assert (
        "Nothing has left the node for you."
        in member_client.get("/privacy/egress/").content.decode()
    )
    assert friend_client.get("/privacy/egress/").status_code == 403
    assert Client().get("/privacy/egress/").status_code == 302
    assert not Egress.objects.exists()
