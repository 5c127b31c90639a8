"""What the chat's preview showed is what leaves, or nothing does: the question carries the
preview's digest, and an outside model to which something else would go is refused (a route
passes it over). The owner may have trusted a provider since, or a route may fall back to one
that would be sent the values as written."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.privacy.models import Egress
from apps.providers import routing
from apps.providers.models import Provider
from tests.privacy.household import MODEL, PROMPT, REDACTED, chat_post, provider_double
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db(transaction=True)


def previewed(client: Client, model: str) -> dict[str, Any]:
    status, [shown] = chat_post(client, "/chat/preview", {"model": model, "question": PROMPT})
    assert status == 200, shown
    return shown


def asked(client: Client, model: str, digest: str) -> tuple[int, list[Any]]:
    body = {"model": model, "question": PROMPT, "price_msat": 0, "leaving": digest}
    return chat_post(client, "/chat/ask", body)


def test_a_question_sent_after_its_preview_leaves_exactly_as_shown(
    member_client: Client, member_named: Any, outside: OpenAIShapedDouble
) -> None:
    shown = previewed(member_client, MODEL)

    status, events = asked(member_client, MODEL, shown["digest"])

    assert status == 200
    assert any(event["event"] == "done" for event in events)
    assert outside.requests[0]["messages"] == shown["messages"]
    assert shown["messages"][-1]["content"] == REDACTED


def test_a_provider_trusted_after_the_preview_is_sent_nothing(
    member_client: Client, member_named: Any, outside: OpenAIShapedDouble
) -> None:
    shown = previewed(member_client, MODEL)
    Provider.objects.filter(name="lan").update(trusted=True)  # the owner, in between

    status, [refusal] = asked(member_client, MODEL, shown["digest"])

    assert status == 409
    assert "not what the preview showed" in refusal["error"]
    assert outside.requests == []
    assert not Egress.objects.exists()


def test_a_route_does_not_fall_back_to_a_provider_that_would_be_sent_other_text(
    member_client: Client, member_named: Any, outside: OpenAIShapedDouble
) -> None:
    family = provider_double("family", trusted=True)
    try:
        routing.route_set("mix", "fallback", [MODEL, "family/strong-1"])
        outside.switches["status_500"] = True
        shown = previewed(member_client, "route/mix")

        status, [refusal] = asked(member_client, "route/mix", shown["digest"])
    finally:
        family.stop()

    assert shown["trusted"] is False
    assert status == 409
    assert "not what the preview showed" in refusal["error"]
    assert len(outside.requests) == 1  # asked as shown, and failed
    assert family.requests == []  # it would have been sent the values as written


def test_a_route_falls_back_to_a_provider_sent_the_same_placeholders(
    member_client: Client, member_named: Any, outside: OpenAIShapedDouble
) -> None:
    lan2 = provider_double("lan2")
    try:
        routing.route_set("strong", "fallback", [MODEL, "lan2/strong-1"])
        outside.switches["status_500"] = True
        shown = previewed(member_client, "route/strong")

        status, events = asked(member_client, "route/strong", shown["digest"])
    finally:
        lan2.stop()

    assert status == 200
    assert any(event["event"] == "done" for event in events)
    assert lan2.requests[0]["messages"] == shown["messages"]


def test_a_digest_that_is_not_one_is_refused_and_nothing_is_sent(
    member_client: Client, member_named: Any, outside: OpenAIShapedDouble
) -> None:
    status, [refusal] = asked(member_client, MODEL, "not a digest")

    assert status == 400
    assert "digest" in refusal["error"]
    assert outside.requests == []


def test_a_lone_surrogate_is_refused_clearly_not_crashed_on(
    member_client: Client, member_named: Any, outside: OpenAIShapedDouble
) -> None:
    body = {"model": MODEL, "question": "Hi \ud800 there", "price_msat": 0}

    preview_status, [preview] = chat_post(member_client, "/chat/preview", body)
    status, [refusal] = chat_post(member_client, "/chat/ask", body)

    assert (preview_status, status) == (400, 400)
    assert "not valid Unicode" in refusal["error"] and "not valid Unicode" in preview["error"]
    assert outside.requests == []
    assert not Egress.objects.exists()
