"""A Channels layer kept in a SQLite file, for the embedded default with no Redis.

The worker and the web server are separate processes; both open the same file, so an
event the worker sends to a group reaches the browsers connected to the web server.
Each process polls only for its own specific channels (one query for all of them),
so many open websockets cost one poll, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body BLOB NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS channel_message_channel ON channel_message (channel, id);
CREATE TABLE IF NOT EXISTS channel_group (
    name TEXT NOT NULL,
    channel TEXT NOT NULL,
    joined REAL NOT NULL,
    PRIMARY KEY (name, channel)
);
"""


class SQLiteChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    extensions = ["groups", "flush"]

    def __init__(
        self,
        path: str,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[str, int] | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.path = Path(path)
        self.group_expiry = group_expiry
        self.poll_interval = poll_interval
        self.local_prefix = f"specific.{uuid.uuid4().hex[:16]}!"
        self._local = threading.local()
        self._inboxes: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._receivers = 0
        self._poller: asyncio.Task[None] | None = None
        self._db().executescript(_SCHEMA)

    # The database, one connection per thread (sqlite3 connections are not shared).

    def _db(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=20, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> None:
        self._db().execute(sql, parameters)

    def _insert(self, channels: list[str], body: bytes, *, raise_when_full: bool) -> None:
        db = self._db()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            for channel in channels:
                (waiting,) = db.execute(
                    "SELECT count(*) FROM channel_message WHERE channel = ? AND expires > ?",
                    (channel, now),
                ).fetchone()
                if waiting >= self.get_capacity(channel):
                    if raise_when_full:
                        raise ChannelFull(channel)
                    continue  # group_send drops messages for full channels, as the spec says
                db.execute(
                    "INSERT INTO channel_message (channel, body, expires) VALUES (?, ?, ?)",
                    (channel, body, now + self.expiry),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _take(self, where: str, *arguments: str, limit: int = 100) -> list[tuple[str, bytes]]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"SELECT id, channel, body FROM channel_message WHERE {where} "  # noqa: S608
                "AND expires > ? ORDER BY id LIMIT ?",
                (*arguments, time.time(), limit),
            ).fetchall()
            db.executemany("DELETE FROM channel_message WHERE id = ?", [(r[0],) for r in rows])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [(channel, body) for _, channel, body in rows]

    def _clean_expired(self) -> None:
        db = self._db()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        # A channel whose message expired unread has nobody listening: it leaves its groups.
        db.execute(
            "DELETE FROM channel_group WHERE joined < ? OR channel IN "
            "(SELECT channel FROM channel_message WHERE expires <= ?)",
            (now - self.group_expiry, now),
        )
        db.execute("DELETE FROM channel_message WHERE expires <= ?", (now,))
        db.execute("COMMIT")

    # Channel layer API

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{self.local_prefix}{uuid.uuid4().hex}"

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        body = msgpack.packb(message, use_bin_type=True)
        await asyncio.to_thread(self._insert, [channel], body, raise_when_full=True)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        if channel.startswith(self.local_prefix):
            inbox = self._inboxes.setdefault(channel, asyncio.Queue())
            self._receivers += 1
            self._ensure_poller()
            try:
                return await inbox.get()
            finally:
                self._receivers -= 1
                if inbox.empty():
                    self._inboxes.pop(channel, None)
        while True:
            taken = await asyncio.to_thread(self._take, "channel = ?", channel, limit=1)
            if taken:
                return self._unpack(taken[0][1])
            await asyncio.sleep(self.poll_interval)

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_local_channels())

    async def _poll_local_channels(self) -> None:
        last_clean = 0.0
        while self._receivers:
            try:
                taken = await asyncio.to_thread(
                    self._take,
                    "channel > ? AND channel < ?",
                    self.local_prefix,
                    f"{self.local_prefix}~",
                )
                if time.monotonic() - last_clean > 30:
                    await asyncio.to_thread(self._clean_expired)
                    last_clean = time.monotonic()
            except sqlite3.Error:
                # A busy or briefly unreadable file must not end delivery for good.
                logger.warning("The channel layer could not read its database", exc_info=True)
                taken = []
            for channel, body in taken:
                self._inboxes.setdefault(channel, asyncio.Queue()).put_nowait(self._unpack(body))
            if not taken:
                await asyncio.sleep(self.poll_interval)

    @staticmethod
    def _unpack(body: bytes) -> dict[str, Any]:
        message: dict[str, Any] = msgpack.unpackb(body, raw=False)
        return message

    async def flush(self) -> None:
        def delete_all() -> None:
            self._db().executescript("DELETE FROM channel_message; DELETE FROM channel_group;")

        await asyncio.to_thread(delete_all)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()

    # Groups extension

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await asyncio.to_thread(
            self._execute,
            "INSERT OR REPLACE INTO channel_group (name, channel, joined) VALUES (?, ?, ?)",
            (group, channel, time.time()),
        )

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await asyncio.to_thread(
            self._execute,
            "DELETE FROM channel_group WHERE name = ? AND channel = ?",
            (group, channel),
        )

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        body = msgpack.packb(message, use_bin_type=True)

        def send_to_members() -> None:
            rows = self._db().execute(
                "SELECT channel FROM channel_group WHERE name = ? AND joined > ?",
                (group, time.time() - self.group_expiry),
            )
            channels = [channel for (channel,) in rows.fetchall()]
            if channels:
                self._insert(channels, body, raise_when_full=False)

        await asyncio.to_thread(send_to_members)
