"""What the privacy proofs share: a member with private values of every everyday kind, an
OpenAI-shaped provider double on loopback added as an outside provider (the home-network kind:
redacted like every other unless the owner trusts it), and the ways a request reaches it: the
chat (a stored conversation), /v1 with an API key (streamed and whole), and the pipeline
itself. Its fixtures are shared through tests/conftest.py."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from apps.identity import services as identity
from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import Done, Failed
from apps.privacy.models import Egress
from apps.providers import services
from apps.providers.models import Provider
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

NAME = "Annika Berg"
EMAIL = "annika.berg@example.org"
PHONE = "+49 170 1234567"
IBAN = "DE89 3704 0044 0532 0130 00"
STREET = "Lindenstraße 12"
PRIVATE = (NAME, EMAIL, PHONE, IBAN, STREET)
PROMPT = (
    f"Hi, I am {NAME}. Write to {EMAIL} or call {PHONE}; my IBAN is {IBAN} and I live at {STREET}."
)
# The same prompt as the vault of a new request redacts it.
REDACTED = (
    "Hi, I am [NAME_1]. Write to [EMAIL_1] or call [PHONE_1]; "
    "my IBAN is [IBAN_1] and I live at [ADDRESS_1]."
)
FOUND = {"address": 1, "email": 1, "iban": 1, "name": 1, "phone": 1}
MODEL = "lan/strong-1"
SAMPLING = Sampling(max_tokens=64, temperature=0.0, top_p=1.0, seed=7)
# A placeholder as the vault writes it: its kind's label and number.
PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)_([0-9]+)\]")


@pytest.fixture
def member_named(member: Any) -> Any:
    """The member, with the name the household knows them by (a household term)."""
    member.name = NAME
    member.save(update_fields=["name"])
    return member


def provider_double(name: str, *, trusted: bool = False) -> OpenAIShapedDouble:
    """A started double, added as the outside provider `name` (the owner must exist)."""
    double = OpenAIShapedDouble()
    double.name = name
    double.start()
    services.provider_add(double.url, kind="openai", name=name)
    if trusted:  # the owner's word, as the provider's page records it
        Provider.objects.filter(name=name).update(trusted=True)
    return double


@pytest.fixture
def outside(owner: Any) -> Iterator[OpenAIShapedDouble]:
    """The outside provider `lan`, untrusted: what it receives is redacted."""
    double = provider_double("lan")
    yield double
    double.stop()


# Asking ---------------------------------------------------------------------------------------


def pipeline_ask(
    member: Any,
    content: str = PROMPT,
    *,
    model: str = MODEL,
    origin: pipeline.Origin = pipeline.Origin.AGENT,
) -> tuple[str, Done | Failed]:
    request = pipeline.AnswerRequest(
        member, origin, model, [{"role": "user", "content": content}], SAMPLING
    )
    return pipeline.answer_sync(request)


def chat_post(client: Client, url: str, body: dict[str, Any]) -> tuple[int, list[Any]]:
    """A chat POST read in the event loop that asked it, as the page reads it: the status,
    and the JSON lines (or the one JSON refusal)."""

    async def exchange() -> tuple[int, bytes]:
        asking = AsyncClient()
        asking.cookies = client.cookies  # the member's session
        response = await asking.post(url, body, content_type="application/json")
        if response.streaming:
            return response.status_code, b"".join([c async for c in response.streaming_content])
        return response.status_code, response.content

    status, raw = async_to_sync(exchange)()
    return status, [json.loads(line) for line in raw.splitlines()]


def chat_ask(client: Client, question: str = PROMPT, **more: Any) -> tuple[int, list[Any]]:
    body = {"model": MODEL, "question": question, "price_msat": 0, **more}
    return chat_post(client, "/chat/ask", body)


def chat_tokens(events: list[dict[str, Any]]) -> list[str]:
    return [event["text"] for event in events if event["event"] == "token"]


def done_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(event for event in events if event["event"] == "done")


def api_key(member: Any) -> str:
    _, key = identity.apikey_create(member, "laptop")
    return key


def v1_whole(
    key: str, content: str = PROMPT, model: str = MODEL, **more: Any
) -> tuple[int, dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **more}
    response = Client(HTTP_AUTHORIZATION=f"Bearer {key}").post(
        "/v1/chat/completions", json.dumps(body), content_type="application/json"
    )
    return response.status_code, response.json()


def v1_streamed(
    key: str, content: str = PROMPT, model: str = MODEL, **more: Any
) -> tuple[int, list[Any]]:
    """The status, and the server-sent events' JSON payloads (or the one JSON refusal)."""
    messages = [{"role": "user", "content": content}]
    body = {"model": model, "messages": messages, "stream": True, **more}

    async def exchange() -> tuple[int, bytes, bool]:
        response = await AsyncClient().post(
            "/v1/chat/completions",
            body,
            content_type="application/json",
            headers={"Authorization": f"Bearer {key}"},
        )
        if response.streaming:
            raw = b"".join([c async for c in response.streaming_content])
            return response.status_code, raw, True
        return response.status_code, response.content, False

    status, raw, streamed = async_to_sync(exchange)()
    if not streamed:
        return status, [json.loads(raw)]
    lines = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    return status, [json.loads(line) for line in lines if line != "[DONE]"]


def v1_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]
    )


def v1_provenance(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    return next(chunk["sovereign"] for chunk in chunks if "sovereign" in chunk)


# What left ------------------------------------------------------------------------------------


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a parsed JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def leaked(value: Any, secrets: tuple[str, ...] = PRIVATE) -> list[str]:
    """The private values found anywhere in what was received (whole or in part: the
    street's name, the e-mail's user), case-insensitively."""
    pieces = {piece.lower() for secret in secrets for piece in _pieces(secret)}
    text = "\n".join(strings_in(value)).lower()
    return sorted(piece for piece in pieces if piece in text)


def _pieces(secret: str) -> list[str]:
    """A value and its telling parts: each word of four letters or more, each run of digits."""
    words = re.findall(r"[^\W\d_]{4,}|\d{4,}", secret)
    return [secret, secret.replace(" ", ""), *words]


def placeholders_counted(body: dict[str, Any]) -> dict[str, int]:
    """How many placeholders of each kind a request carries (in its messages and its stop
    sequences), as `found` names the kinds ({"email": 2})."""
    counted: Counter[str] = Counter()
    texts = [message["content"] for message in body["messages"]] + body.get("stop", [])
    for text in texts:
        for match in PLACEHOLDER.finditer(text):
            counted[match.group(1).lower()] += 1
    return dict(sorted(counted.items()))


def egress_matches(doubles: list[OpenAIShapedDouble]) -> list[Egress]:
    """The egress records, each checked against what its provider received: the body as it
    arrived, with `found` counting the placeholders in it. In the order they were sent."""
    received = [body for double in doubles for body in double.requests]
    rows = list(Egress.objects.order_by("id"))
    assert len(rows) == len(received)
    bodies = [json.loads(row.body) for row in rows]
    for body in received:
        assert body in bodies, "a request reached a provider with no egress record of it"
    for row, body in zip(rows, bodies, strict=True):
        assert row.redacted is True
        assert row.found == placeholders_counted(body)
    return rows
