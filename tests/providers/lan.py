"""Three providers on the home network, each answering with its own name (free: no payment),
for tests of routes and cross-checks: `from tests.providers.lan import added, lan`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.providers import services
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

NAMES = ("alpha", "beta", "gamma")


@pytest.fixture
def lan() -> Iterator[dict[str, OpenAIShapedDouble]]:
    doubles = {name: OpenAIShapedDouble() for name in NAMES}
    for name, double in doubles.items():
        double.name = name
        double.start()
    yield doubles
    for double in doubles.values():
        double.stop()


@pytest.fixture
def added(lan: dict[str, OpenAIShapedDouble], owner: Any) -> None:
    for name, double in lan.items():
        services.provider_add(double.url, kind="openai", name=name)
