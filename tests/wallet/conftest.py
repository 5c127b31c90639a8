"""A payer node (the household's) joined to a payee node, both lightningd doubles."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lightningd import LightningdDouble

_labels = itertools.count()


@pytest.fixture
def payee(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "payee", alias="payee") as node:
        yield node


@pytest.fixture
def node(tmp_path: Path, payee: LightningdDouble, settings: Any) -> Iterator[LightningdDouble]:
    """The household's node, which Sovereign pays through."""
    with LightningdDouble(tmp_path / "node", alias="household") as household:
        household.connect(payee, amount_sat=1_000_000, push_msat=100_000_000)  # both can pay
        settings.LIGHTNING_RPC = str(household.rpc_file)
        yield household


def invoice(payee: LightningdDouble, msat: int | str, expiry: int = 3600) -> dict[str, Any]:
    return payee.rpc.invoice(msat, f"inv-{next(_labels)}", "a test", expiry=expiry)  # type: ignore[no-any-return]
