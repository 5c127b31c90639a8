"""Two nodes joined by one 1,000,000-sat channel, as in the recorded transcript."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lightningd import LightningdDouble


@pytest.fixture
def payee(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "payee", alias="payee") as node:
        yield node


@pytest.fixture
def payer(tmp_path: Path, payee: LightningdDouble) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "payer", alias="payer") as node:
        node.connect(payee, amount_sat=1_000_000)
        yield node
