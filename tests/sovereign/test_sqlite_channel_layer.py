"""The embedded channel layer: messages and groups shared by processes through one file."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from channels.exceptions import ChannelFull

from sovereign.sqlite_channel_layer import SQLiteChannelLayer
from tests.instances import ROOT


def layer(tmp_path: Path, **config: int) -> SQLiteChannelLayer:
    return SQLiteChannelLayer(path=str(tmp_path / "channels.sqlite3"), **config)


def test_a_message_sent_by_one_layer_is_received_by_another(tmp_path: Path) -> None:
    async def scenario() -> dict[str, object]:
        web, worker = layer(tmp_path), layer(tmp_path)
        channel = await web.new_channel()
        await worker.send(channel, {"type": "hello", "body": b"\x00bytes"})
        return await asyncio.wait_for(web.receive(channel), timeout=5)

    assert asyncio.run(scenario()) == {"type": "hello", "body": b"\x00bytes"}


def test_a_group_message_from_another_process_reaches_every_member(tmp_path: Path) -> None:
    async def scenario() -> list[dict[str, object]]:
        web = layer(tmp_path)
        first, second, outsider = [await web.new_channel() for _ in range(3)]
        await web.group_add("system", first)
        await web.group_add("system", second)
        sender = (
            "import asyncio, sys; from sovereign.sqlite_channel_layer import SQLiteChannelLayer; "
            "layer = SQLiteChannelLayer(path=sys.argv[1]); "
            "asyncio.run(layer.group_send('system', {'type': 'system.event', 'kind': 'worker'}))"
        )
        path = str(tmp_path / "channels.sqlite3")
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", sender, path], cwd=ROOT)
        received = [await asyncio.wait_for(web.receive(c), timeout=5) for c in (first, second)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(web.receive(outsider), timeout=0.3)
        return received

    assert asyncio.run(scenario()) == [{"type": "system.event", "kind": "worker"}] * 2


def test_a_channel_that_left_its_group_gets_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        web = layer(tmp_path)
        channel = await web.new_channel()
        await web.group_add("system", channel)
        await web.group_discard("system", channel)
        await web.group_send("system", {"type": "system.event"})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(web.receive(channel), timeout=0.3)

    asyncio.run(scenario())


def test_a_full_channel_refuses_a_send_but_a_group_send_skips_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        web = layer(tmp_path, capacity=2)
        full, roomy = await web.new_channel(), await web.new_channel()
        for channel in (full, roomy):
            await web.group_add("system", channel)
        await web.send(full, {"type": "one"})
        await web.send(full, {"type": "two"})
        with pytest.raises(ChannelFull):
            await web.send(full, {"type": "three"})
        await web.group_send("system", {"type": "group"})
        assert await asyncio.wait_for(web.receive(roomy), timeout=5) == {"type": "group"}
        kinds = [(await web.receive(full))["type"] for _ in range(2)]
        assert kinds == ["one", "two"]

    asyncio.run(scenario())


def test_an_expired_message_is_never_delivered(tmp_path: Path) -> None:
    async def scenario() -> None:
        web = layer(tmp_path, expiry=1)
        channel = await web.new_channel()
        await web.send(channel, {"type": "stale"})
        time.sleep(1.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(web.receive(channel), timeout=0.3)

    asyncio.run(scenario())


def test_a_named_channel_is_received_in_order(tmp_path: Path) -> None:
    async def scenario() -> list[object]:
        web, worker = layer(tmp_path), layer(tmp_path)
        for number in range(3):
            await worker.send("jobs", {"type": "job", "number": number})
        return [(await web.receive("jobs"))["number"] for _ in range(3)]

    assert asyncio.run(scenario()) == [0, 1, 2]
