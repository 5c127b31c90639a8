"""A payment's pending row is committed durably, on SQLite and on PostgreSQL: a power cut
after the reservation returns cannot take it away before the node is asked to pay."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from apps.wallet import budgets

pytestmark = pytest.mark.usefixtures("database")  # on SQLite, then on PostgreSQL

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def reserve(purpose: str) -> None:
    budgets.reserve(
        purpose=purpose, label=f"sovereign:{purpose}", caller="test", bolt11="lnbcrt...",
        payment_hash=hashlib.sha256(os.urandom(32)).hexdigest(), destination="",
        amount_msat=1000, max_fee_msat=100,
    )  # fmt: skip


def durability_setting() -> Any:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA synchronous")
        else:
            cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@contextmanager
def read_when_the_journal_is_written(seen: list[Any]) -> Iterator[None]:
    """Read the durability setting on the very connection, in the very transaction, that
    inserts the pending row."""

    def watch(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith('INSERT INTO "wallet_payment"'):
            seen.append(durability_setting())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        yield


@pytest.mark.django_db(transaction=True)
def test_the_pending_row_is_written_by_a_connection_that_syncs_each_commit() -> None:
    seen: list[Any] = []
    if connection.vendor == "postgresql":
        # As a server or role may be configured, to commit faster at the risk of the last ones.
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")

    with read_when_the_journal_is_written(seen):
        reserve("durable")

    if connection.vendor == "sqlite":
        assert seen == [FULL]
    else:
        assert seen == ["on"]  # in force for the reservation's commit only:
        assert durability_setting() == "off"  # the session's own setting is left as it was
