"""The owner marks a provider trusted (nothing redacted from what it is sent) or not, on the
Providers page or from the shell; the one pipeline then sends it the question as written, and
the egress record says nothing was redacted. A hard stop still refuses."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.audit.models import AuditEvent
from apps.audit.services import action_label
from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import AnswerRefused, Done
from apps.privacy import redaction
from apps.privacy.models import Egress
from apps.providers import services
from apps.providers.models import Provider
from apps.providers.services import ProviderError
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

SAMPLING = Sampling(max_tokens=32, temperature=0.0, top_p=1.0, seed=7)
QUESTION = "Write to ana.mueller@example.org about the sats"
SEED = " ".join(["abandon"] * 11 + ["about"])


@pytest.fixture
def lan() -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        yield double


@pytest.fixture
def added(lan: OpenAIShapedDouble, owner: Any) -> Provider:
    return services.provider_add(lan.url, kind="openai", name="lan")


def trusted() -> bool:
    return Provider.objects.get(name="lan").trusted


def providers(*argv: str) -> str:
    out = io.StringIO()
    call_command("providers", *argv, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_trusting_is_audited_once_per_change(added: Provider) -> None:
    assert services.provider_trust("lan", True, actor="shell") is True
    assert services.provider_trust("lan", True, actor="shell") is False
    assert trusted()
    assert services.provider_trust("lan", False, actor="shell") is True and not trusted()

    events = AuditEvent.objects.filter(action="provider_trusted").order_by("id")
    assert [(e.subject, e.detail) for e in events] == [
        ("lan", "trusted: nothing redacted"),
        ("lan", "not trusted: redacted"),
    ]
    assert action_label("provider_trusted") == "Provider trusted or not"
    with pytest.raises(ProviderError, match="There is no provider named 'nobody'"):
        services.provider_trust("nobody", True, actor="shell")


@pytest.mark.django_db
def test_the_owner_trusts_a_provider_on_the_page_and_it_says_so(
    added: Provider, owner_client: Client, member_client: Client
) -> None:
    page = owner_client.get("/providers/").content.decode()
    assert "Private values are replaced by placeholders before anything" in page
    assert "trusted: nothing redacted" not in page
    assert 'data-confirm="Trust lan? What members send to it is no longer redacted' in page

    response = owner_client.post("/providers/lan/trust", {"trusted": "yes"}, follow=True)

    page = response.content.decode()
    assert trusted()
    assert "lan is trusted: what is sent to it is not redacted." in page
    assert '<span class="kind trusted">trusted: nothing redacted</span>' in page
    assert "<strong>Trusted: nothing redacted.</strong>" in page
    assert '<input type="hidden" name="trusted" value="no">' in page
    assert ">Stop trusting lan</button>" in page

    page = owner_client.post("/providers/lan/trust", {"trusted": "no"}, follow=True)
    assert not trusted() and "trusted: nothing redacted" not in page.content.decode()
    assert member_client.post("/providers/lan/trust", {"trusted": "yes"}).status_code == 403
    assert not trusted()
    unknown = owner_client.post("/providers/nobody/trust", {"trusted": "yes"}, follow=True)
    assert "There is no provider named &#x27;nobody&#x27;." in unknown.content.decode()


@pytest.mark.django_db
def test_the_owner_trusts_a_provider_from_the_shell(added: Provider) -> None:
    assert providers("trust", "lan") == "lan is now trusted: nothing redacted.\n"
    assert providers("trust", "lan") == "lan is already trusted: nothing redacted.\n"
    assert "lan  openai  " in providers("list")
    assert "  trusted: nothing redacted\n" in providers("list")
    assert providers("trust", "lan", "--off") == (
        "lan is now not trusted: private values are redacted.\n"
    )
    assert not trusted() and "trusted" not in providers("list")
    with pytest.raises(CommandError, match="There is no provider named 'nobody'"):
        providers("trust", "nobody")


def _ask(member: Any, question: str) -> str:
    request = pipeline.AnswerRequest(
        member,
        pipeline.Origin.API,
        "lan/strong-1",
        [{"role": "user", "content": question}],
        SAMPLING,
    )
    text, end = pipeline.answer_sync(request)
    assert isinstance(end, Done), end
    return text


@pytest.mark.django_db(transaction=True)
def test_a_trusted_provider_is_sent_the_question_as_written(
    lan: OpenAIShapedDouble, added: Provider, member: Any
) -> None:
    assert _ask(member, QUESTION) == f"double answers: {QUESTION}"  # restored
    assert lan.requests[-1]["messages"][-1]["content"] == "Write to [EMAIL_1] about the sats"
    first = Egress.objects.get()
    assert (first.redacted, first.found) == (True, {"email": 1})

    services.provider_trust("lan", True, actor="shell")

    route = services.route_for("lan/strong-1")
    assert route is not None and route.provider.trusted is True
    leaving = redaction.outbound([{"role": "user", "content": QUESTION}], trusted=True)
    assert leaving.redacted is False and leaving.messages[0]["content"] == QUESTION
    assert _ask(member, QUESTION) == f"double answers: {QUESTION}"
    assert lan.requests[-1]["messages"][-1]["content"] == QUESTION
    second = Egress.objects.exclude(pk=first.pk).get()
    assert (second.redacted, second.found) == (False, {})
    assert QUESTION in json.loads(second.body)["messages"][-1]["content"]


@pytest.mark.django_db
def test_a_trusted_provider_is_still_never_sent_a_seed_phrase(added: Provider) -> None:
    services.provider_trust("lan", True, actor="shell")
    route = services.route_for("lan/strong-1")
    assert route is not None
    with pytest.raises(AnswerRefused, match="seed phrase"):
        redaction.outbound(
            [{"role": "user", "content": f"keep {SEED} safe"}], trusted=route.provider.trusted
        )
