"""A canary: a unique string inside private values (an e-mail address and a street), sent to an
outside model through the chat and /v1 (streamed, whole, and along a route whose first
provider fails), never shows up where it must not:
in any log line (every logger at DEBUG, and whatever reached stdout and stderr), in any file
under the node's data directory, in the egress record, in the audit rows, in any row of any
table of the database outside the member's own conversation (its vault is kept there sealed,
never in clear), or in what the provider received. It does show up where it must: in the
answers the member reads, and in their own conversation.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from apps.audit.models import AuditEvent
from apps.inference.models import ChatMessage, Conversation
from apps.privacy.kept import vault_unsealed
from apps.privacy.models import Egress
from apps.providers import routing
from tests.privacy.household import (
    api_key,
    chat_ask,
    chat_tokens,
    provider_double,
    v1_streamed,
    v1_text,
    v1_whole,
)
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db(transaction=True)
# A fresh value each run: nothing left by an earlier run can be mistaken for a leak.
CANARY = uuid.uuid4().hex
CANARY_EMAIL = f"canary-{CANARY}@example.org"
# A street the address detector recognises carries a second canary, of letters only.
STREET_CANARY = "".join(chr(ord("a") + int(digit, 16)) for digit in CANARY[:16])
CANARY_STREET = f"Canary{STREET_CANARY}weg 7"
CANARIES = (CANARY, STREET_CANARY)
QUESTION = f"Please draft a note to {CANARY_EMAIL} about the fence at {CANARY_STREET}."
# In the member's own conversation: the question as written, each answer restored.
OWN_COLUMNS = {("inference_chatmessage", "content"), ("inference_conversation", "title")}


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log_line() -> Iterator[Kept]:
    """Every logger at DEBUG, each record kept (formatted, with any traceback)."""
    kept = Kept()
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    was = [(logger, logger.level, logger.disabled, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if not logger.propagate:
            logger.addHandler(kept)
    root.addHandler(kept)
    yield kept
    for logger, level, disabled, _ in was:
        logger.setLevel(level)
        logger.disabled = disabled
        logger.removeHandler(kept)


@pytest.fixture
def broken(owner: Any) -> Iterator[OpenAIShapedDouble]:
    """A provider that fails, first along a route: the error paths are walked too."""
    double = provider_double("broken")
    double.switches["status_500"] = True
    yield double
    double.stop()


def found_in(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def files_holding_it(directory: Path) -> list[str]:
    """Files under the data directory holding a canary, the database's own files aside (its
    rows are read one by one below)."""
    database = Path(settings.DATABASES["default"]["TEST"]["NAME"]).name
    holding = []
    for folder, _, names in os.walk(directory):
        for name in names:
            path = Path(folder) / name
            if name.startswith(database) or path.is_symlink() or not path.is_file():
                continue
            raw = path.read_bytes()
            if any(canary.encode() in raw for canary in CANARIES):
                holding.append(str(path.relative_to(directory)))
    return holding


def database_rows() -> Iterator[tuple[str, str]]:
    """Every row of every table as text (its table's name, the row), the columns holding the
    member's own conversation left out."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - the database's own names
            columns = [column[0] for column in cursor.description]
            for row in cursor.fetchall():
                kept = [
                    _text(value)
                    for column, value in zip(columns, row, strict=True)
                    if (table, column) not in OWN_COLUMNS
                ]
                yield table, " ".join(kept)


def _text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("latin-1")
    return str(value)


def test_a_canary_never_leaves_the_members_own_conversation_and_answers(
    member: Any,
    member_client: Client,
    outside: OpenAIShapedDouble,
    broken: OpenAIShapedDouble,
    every_log_line: Kept,
    capfd: pytest.CaptureFixture[str],
) -> None:
    key = api_key(member)
    routing.route_set("fallback", "fallback", ["broken/strong-1", "lan/strong-1"])

    status, events = chat_ask(member_client, QUESTION)
    assert status == 200
    conversation_id = events[0]["conversation"]
    chat_ask(member_client, "And once more, shorter?", conversation=conversation_id)
    _, chunks = v1_streamed(key, QUESTION)
    _, completion = v1_whole(key, QUESTION)
    _, routed = v1_whole(key, QUESTION, model="route/fallback")

    # Where it must be: every answer the member reads, restored; their own conversation.
    expected = f"lan answers: {QUESTION}"
    assert "".join(chat_tokens(events)) == expected
    assert v1_text(chunks) == expected
    assert completion["choices"][0]["message"]["content"] == expected
    assert routed["choices"][0]["message"]["content"] == expected
    answer = ChatMessage.objects.filter(role="assistant").order_by("id").first()
    assert answer is not None and found_in(answer.content) == list(CANARIES)
    conversation = Conversation.objects.get(pk=conversation_id)
    assert found_in(json.dumps(vault_unsealed(conversation.vault_sealed).state()))
    assert found_in(conversation.vault_sealed) == []  # kept sealed, never in clear

    # Where it must never be.
    received = outside.requests + broken.requests
    assert len(received) == 6
    assert found_in(json.dumps(received, ensure_ascii=False)) == []
    egress = list(Egress.objects.values_list("body", "found"))
    assert len(egress) == 6 and all(found["email"] and found["address"] for _, found in egress)
    assert found_in(json.dumps(egress, ensure_ascii=False)) == []
    audit = [" ".join(map(str, row)) for row in AuditEvent.objects.values_list()]
    assert len(audit) >= 6 and found_in("\n".join(audit)) == []
    rows = list(database_rows())
    assert {"privacy_egress", "inference_conversation", "audit_auditevent"} <= {t for t, _ in rows}
    assert [table for table, row in rows if found_in(row)] == []
    assert every_log_line.lines  # the capture works: the requests were logged at DEBUG
    assert found_in("\n".join(every_log_line.lines)) == []
    written = capfd.readouterr()
    assert found_in(written.out + written.err) == []
    assert files_holding_it(Path(settings.DATA_DIR)) == []
