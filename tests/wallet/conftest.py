"""A payer node (the household's) joined to a payee node, both lightningd doubles."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.wallet.rune_setup import wanted_restrictions
from tests.lightningd import LightningdDouble

_labels = itertools.count()


@pytest.fixture
def payee(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "payee", alias="payee") as node:
        yield node


@pytest.fixture
def node(tmp_path: Path, payee: LightningdDouble, settings: Any) -> Iterator[LightningdDouble]:
    """The household's node, which Sovereign pays through."""
    yield from household_node(tmp_path, payee, settings, "socket")


def household_node(
    tmp_path: Path, payee: LightningdDouble, settings: Any, transport: str
) -> Iterator[LightningdDouble]:
    """The household's node joined to the payee, reached over its socket or over CLNRest
    with the rune `wallet rune` would make."""
    rest = transport == "clnrest"
    with LightningdDouble(tmp_path / "node", alias="household", rest=rest) as household:
        household.connect(payee, amount_sat=1_000_000, push_msat=100_000_000)  # both can pay
        settings.LIGHTNING_RPC = str(household.rpc_file)
        if rest:
            use_rest(settings, household, rune_for(household, wanted_restrictions()), tmp_path)
        yield household


def rune_for(node: LightningdDouble, restrictions: list[list[str]]) -> str:
    return str(node.rpc.call("createrune", {"restrictions": restrictions})["rune"])


def use_rest(settings: Any, node: LightningdDouble, rune: str, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "rune").write_text(rune + "\n")
    settings.LIGHTNING_RPC = ""  # nothing may reach the node but CLNRest
    settings.LIGHTNING_REST_URL = node.rest_url
    settings.LIGHTNING_RUNE_FILE = str(folder / "rune")
    settings.LIGHTNING_REST_CA = str(node.ca_file)


def invoice(payee: LightningdDouble, msat: int | str, expiry: int = 3600) -> dict[str, Any]:
    return payee.rpc.invoice(msat, f"inv-{next(_labels)}", "a test", expiry=expiry)  # type: ignore[no-any-return]
