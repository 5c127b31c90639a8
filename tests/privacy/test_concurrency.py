"""Concurrent conversations never mix their vaults.

Several members, each with their own private values of the same kinds (so each request goes
out with the same placeholders, `[EMAIL_1]`…), ask at the same time: in one event loop
(asyncio.gather, as the web process serves them), from threads (as Celery workers would), and
as two conversations of one member in the chat. The provider double streams each answer in
small chunks, so the answers are restored interleaved. Each member gets back only their own
values; the provider sees only placeholders; each conversation's kept vault holds its own.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient, Client
from nostr_sdk import Keys

from apps.identity.models import Member
from apps.inference import pipeline
from apps.inference.backends.base import Done, Token
from apps.inference.models import Conversation
from apps.privacy.kept import vault_unsealed
from apps.privacy.vault import Vault
from apps.providers import calling
from tests.privacy.household import (
    MODEL,
    SAMPLING,
    chat_tokens,
    leaked,
    pipeline_ask,
)
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db(transaction=True)
PEOPLE = 4


def iban(number: int) -> str:
    """A German IBAN with a valid check (mod 97), grouped as people write it."""
    bban = f"{37040044:08d}{number:010d}"
    check = 98 - int(bban + "131400") % 97
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[at : at + 4] for at in range(0, len(raw), 4))


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    phone: str
    iban: str
    street: str

    @property
    def values(self) -> tuple[str, ...]:
        return (self.name, self.email, self.phone, self.iban, self.street)

    def prompt(self, topic: str) -> str:
        return (
            f"{topic}: I am {self.name}, mail {self.email}, phone {self.phone}, "
            f"IBAN {self.iban}, at {self.street}."
        )


NAMES = ["Klara Vogt", "Jonas Ebert", "Mira Hahn", "Lukas Brandt"]
STREETS = ["Birkenweg 3", "Eichenallee 17", "Ulmenstraße 5", "Ahornweg 21"]
PEOPLE_VALUES = [
    Person(
        name, f"{name.split()[0].lower()}.{n}@example.net", f"+49 151 555{n:04d}", iban(n), street
    )
    for n, (name, street) in enumerate(zip(NAMES, STREETS, strict=True), start=101)
]


@pytest.fixture
def members(owner: Any) -> list[Member]:
    return [
        Member.objects.create_user(
            pubkey=Keys.generate().public_key().to_hex(), role="member", name=person.name
        )
        for person in PEOPLE_VALUES
    ]


@pytest.fixture
def chunked(outside: OpenAIShapedDouble) -> OpenAIShapedDouble:
    outside.switches["chunk_size"] = 2  # many small chunks: the answers are restored interleaved
    return outside


def everyone_asks(asked: list[tuple[Member, str, Vault]]) -> list[str]:
    """All the requests at once in one event loop, each answer streamed to its end."""

    async def one(member: Member, question: str, vault: Vault) -> str:
        request = pipeline.AnswerRequest(
            member,
            pipeline.Origin.CHAT,
            MODEL,
            [{"role": "user", "content": question}],
            SAMPLING,
            vault=vault,
        )
        parts = []
        async for event in await pipeline.answer(request):
            if isinstance(event, Token):
                parts.append(event.text)
            else:
                assert isinstance(event, Done), event
        return "".join(parts)

    async def all_at_once() -> list[str]:
        try:
            return list(await asyncio.gather(*(one(*request) for request in asked)))
        finally:
            await calling.client_close()

    return async_to_sync(all_at_once)()


def test_conversations_answered_in_one_event_loop_each_get_their_own_values(
    members: list[Member], chunked: OpenAIShapedDouble
) -> None:
    asked = [
        (member, person.prompt(topic), Vault())
        for member, person in zip(members, PEOPLE_VALUES, strict=True)
        for topic in ("Invoice", "Letter")  # two conversations each
    ]

    # Each answer, once begun, waits at the double until every one has begun: asked one after
    # another, the first would wait alone and break off.
    together = chunked.switches["together"] = threading.Barrier(len(asked))
    heard = everyone_asks(asked)

    for (member, question, vault), answer in zip(asked, heard, strict=True):
        assert answer == f"lan answers: {question}"
        person = PEOPLE_VALUES[members.index(member)]
        assert sorted(vault.state()["values"].values()) == sorted(person.values)
    assert not together.broken  # they were streamed at the same time, not one after another
    everyones = tuple(value for person in PEOPLE_VALUES for value in person.values)
    assert len(chunked.requests) == len(asked) and leaked(chunked.requests, everyones) == []


def test_members_asking_from_threads_each_get_their_own_values(
    members: list[Member], chunked: OpenAIShapedDouble
) -> None:
    start = threading.Barrier(PEOPLE)

    def ask(index: int) -> str:
        try:
            start.wait(timeout=10)
            text, end = pipeline_ask(members[index], PEOPLE_VALUES[index].prompt("Thread"))
            assert isinstance(end, Done), end
            return text
        finally:
            connection.close()  # each thread's own connection to the test database

    with ThreadPoolExecutor(PEOPLE) as pool:
        answers = list(pool.map(ask, range(PEOPLE)))

    for person, answer in zip(PEOPLE_VALUES, answers, strict=True):
        assert answer == f"lan answers: {person.prompt('Thread')}"
    everyones = tuple(value for person in PEOPLE_VALUES for value in person.values)
    assert len(chunked.requests) == PEOPLE and leaked(chunked.requests, everyones) == []


def chat_at_once(client: Client, asked: list[tuple[str, int | None]]) -> list[list[Any]]:
    """Questions posted to the chat at the same time (to a new conversation: None), each
    answer's JSON lines read to the end."""

    async def post(question: str, conversation: int | None) -> list[Any]:
        asking = AsyncClient()
        asking.cookies = client.cookies
        body = {"model": MODEL, "question": question, "price_msat": 0}
        if conversation is not None:
            body["conversation"] = conversation
        response = await asking.post("/chat/ask", body, content_type="application/json")
        assert response.status_code == 200
        raw = b"".join([chunk async for chunk in response.streaming_content])
        return [json.loads(line) for line in raw.splitlines()]

    async def all_at_once() -> list[list[Any]]:
        try:
            return list(await asyncio.gather(*(post(*question) for question in asked)))
        finally:
            await calling.client_close()

    return async_to_sync(all_at_once)()


def test_two_chat_conversations_at_once_keep_their_own_vaults(
    members: list[Member], member: Member, member_client: Client, chunked: OpenAIShapedDouble
) -> None:
    people = PEOPLE_VALUES[:2]

    opened = chat_at_once(member_client, [(person.prompt("One"), None) for person in people])
    ids = [events[0]["conversation"] for events in opened]
    again = chat_at_once(
        member_client, [(p.prompt("Again"), pk) for p, pk in zip(people, ids, strict=True)]
    )

    for person, events in zip(people, opened, strict=True):
        assert "".join(chat_tokens(events)) == f"lan answers: {person.prompt('One')}"
    for person, events, pk in zip(people, again, ids, strict=True):
        assert "".join(chat_tokens(events)) == f"lan answers: {person.prompt('Again')}"
        kept = vault_unsealed(Conversation.objects.get(pk=pk).vault_sealed)
        assert sorted(kept.state()["values"].values()) == sorted(person.values)
    assert len(chunked.requests) == 4
    assert leaked(chunked.requests, people[0].values + people[1].values) == []
