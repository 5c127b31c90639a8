"""Shared fixtures for outside providers: the household's Lightning node and a provider's node
(lightningd doubles joined by a channel), and a provider added through the service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lightningd import LightningdDouble


@pytest.fixture
def provider_node(tmp_path: Path) -> Iterator[LightningdDouble]:
    """The provider's own Lightning node: its invoices are what the household pays."""
    with LightningdDouble(tmp_path / "provider-node", alias="provider") as node:
        yield node


@pytest.fixture
def household_node(
    tmp_path: Path, provider_node: LightningdDouble, settings: Any
) -> Iterator[LightningdDouble]:
    """The household's node, which Sovereign pays through."""
    with LightningdDouble(tmp_path / "household-node", alias="household") as household:
        household.connect(provider_node, amount_sat=1_000_000, push_msat=100_000_000)
        settings.LIGHTNING_RPC = str(household.rpc_file)
        yield household
