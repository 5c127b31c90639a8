from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.instances import Instance, RedisServer


@pytest.fixture(autouse=True)
def plain_static_files(settings: pytest.FixtureRequest) -> None:
    # The manifest storage needs `collectstatic`; tests that render pages in-process don't.
    settings.STORAGES = {  # type: ignore[attr-defined]
        **settings.STORAGES,  # type: ignore[attr-defined]
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


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
