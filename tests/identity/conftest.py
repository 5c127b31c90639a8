from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest
from nostr_sdk import LocalRelayBuilder, RateLimit


@pytest.fixture(scope="session")
def relay_url() -> Iterator[str]:
    async def start() -> tuple[Any, str]:
        # The default limit (60 notes a minute) would refuse a quick test run's events.
        relay = (
            LocalRelayBuilder()
            .addr("127.0.0.1")
            .rate_limit(RateLimit(max_reqs=10_000, notes_per_minute=100_000))
            .build()
        )
        await relay.run()
        return relay, str(await relay.url())

    # In a thread of its own: a browser test's event loop may be running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as starter:
        relay, url = starter.submit(asyncio.run, start()).result()
    yield url
    relay.shutdown()
