from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from nostr_sdk import Keys, LocalRelayBuilder, RateLimit
from playwright.sync_api import Browser, Page

from tests.browser import chromium
from tests.instances import Instance, RedisServer
from tests.postgresql import PostgresMissing, PostgresServer, default_database

# Fixtures shared by tests of more than one part: home-network providers (`lan`, `added`);
# a member with private values and an outside provider to send them to (`member_named`,
# `outside`).
pytest_plugins = ["tests.providers.lan", "tests.privacy.household"]

# Named people, each with a real Nostr key.
PERSONA_KEYS = {name: Keys.generate() for name in ("owner", "member", "friend", "stranger")}


@pytest.fixture(autouse=True)
def plain_static_files(settings: Any) -> None:
    # The manifest storage needs `collectstatic`; tests that render pages in-process don't.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def keys() -> dict[str, Keys]:
    return PERSONA_KEYS


@pytest.fixture(scope="session")
def relay_url() -> Iterator[str]:
    """A real Nostr relay on this machine, for the whole run."""

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


def _person(name: str, role: str) -> Any:
    from apps.identity.models import Member

    pubkey = PERSONA_KEYS[name].public_key().to_hex()
    return Member.objects.create_user(pubkey=pubkey, role=role)


@pytest.fixture
def owner(db: None) -> Any:
    return _person("owner", "owner")


@pytest.fixture
def member(owner: Any) -> Any:
    return _person("member", "member")


@pytest.fixture
def friend(owner: Any) -> Any:
    return _person("friend", "friend")


@pytest.fixture
def stranger() -> Keys:
    """Someone with a Nostr key who is not on this node."""
    return PERSONA_KEYS["stranger"]


def _client_for(person: Any) -> Client:
    client = Client()
    client.force_login(person)
    return client


@pytest.fixture
def owner_client(owner: Any) -> Client:
    return _client_for(owner)


@pytest.fixture
def member_client(member: Any) -> Client:
    return _client_for(member)


@pytest.fixture
def friend_client(friend: Any) -> Client:
    return _client_for(friend)


@pytest.fixture
def make_instance(tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    """Make Sovereign nodes in temporary data directories; every process is stopped after."""
    instances: list[Instance] = []

    def make(**environment: str) -> Instance:
        data_dir = tmp_path / f"node-{len(instances)}"
        data_dir.mkdir()
        instance = Instance(data_dir, **environment)
        instances.append(instance)
        return instance

    yield make
    for instance in instances:
        instance.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture  # per test: while Playwright runs, its loop would block asyncio.run()
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the run. Missing here: its tests skip, saying so; missing in
    CI (which installs it, .ci/run): they fail, so no run passes without them unnoticed."""
    try:
        server = PostgresServer()
    except PostgresMissing as missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI runs the PostgreSQL tests: {missing}")
        pytest.skip(str(missing))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_environment(request: pytest.FixtureRequest) -> dict[str, str]:
    """What a node's processes are given for their database: nothing (SQLite in the data
    directory), or DATABASE_URL naming a fresh PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    return {"DATABASE_URL": server.database()}


@pytest.fixture(scope="session")
def postgresql_test_database(
    postgresql_server: PostgresServer, django_db_setup: None, django_db_blocker: Any
) -> str:
    """A PostgreSQL database with Sovereign's tables, for the in-process tests run on it."""
    from django.core.management import call_command

    url = postgresql_server.database()
    with django_db_blocker.unblock(), default_database(url):
        call_command("migrate", verbosity=0, interactive=False)
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, django_db_setup: None) -> Iterator[str]:
    """In-process tests of a module run on the tests' SQLite file, then on PostgreSQL: every
    connection made meanwhile (each thread's too) is to the PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    url = request.getfixturevalue("postgresql_test_database")
    with default_database(url):
        from django.db import connection

        assert connection.vendor == "postgresql"
        yield "postgresql"
