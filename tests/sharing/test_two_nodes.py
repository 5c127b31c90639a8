"""Two Sovereign nodes, real processes: one sells its local model, the other adds it as an
outside provider (`manage.py providers add URL --kind l402`, or `--kind mpp`) and buys answers
with its own client, paying through its own Lightning node (a lightningd double joined to the
seller's by a channel). Nothing is shared between them but HTTP and the channel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from nostr_sdk import Keys

from tests.inference.conftest import MODEL
from tests.instances import Instance
from tests.lightningd import LightningdDouble

pytestmark = pytest.mark.processes
PRICE_MSAT = 21_000
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def seller_lightning(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "seller-node", alias="seller") as node:
        yield node


@pytest.fixture
def buyer_lightning(
    tmp_path: Path, seller_lightning: LightningdDouble
) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "buyer-node", alias="buyer") as node:
        node.connect(seller_lightning, amount_sat=1_000_000)
        yield node


def _node(make: Callable[..., Instance], lightning: LightningdDouble, *programs: str) -> Instance:
    made = make(SOVEREIGN_LIGHTNING_RPC=str(lightning.rpc_file))
    made.run(*programs)
    made.wait_until(programs[-1], "up", timeout=120)
    owner = Keys.generate()
    made.claim(owner)
    made.owner = owner  # type: ignore[attr-defined]
    return made


def _shell(node: Instance, code: str) -> str:
    ran = node.manage("shell", "-c", code)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip().splitlines()[-1]  # after the shell's own note on its imports


@pytest.fixture
def seller(make_instance: Callable[..., Instance], seller_lightning: LightningdDouble) -> Instance:
    """Selling the bundled model per 1,000 tokens (1 msat a token), at most 21 sat a request."""
    made = _node(make_instance, seller_lightning, "web", "engine")
    _shell(
        made,
        "from apps.sharing.models import Offer; "
        f"Offer.objects.create(model={MODEL!r}, price_msat=1000, per_1k_tokens=True, "
        f"max_request_msat={PRICE_MSAT})",
    )
    return made


@pytest.fixture
def buyer(make_instance: Callable[..., Instance], buyer_lightning: LightningdDouble) -> Instance:
    made = _node(make_instance, buyer_lightning, "web")
    owner = made.owner  # type: ignore[attr-defined]
    created = made.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "t")
    made.api_key = created.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    return made


def _client(node: Instance) -> openai.OpenAI:
    key = node.api_key  # type: ignore[attr-defined]
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0, timeout=300)


def _asked(client: openai.OpenAI, stream: bool) -> str:
    model = f"seller/{MODEL}"
    if not stream:
        completion = client.chat.completions.create(
            model=model,
            messages=QUESTION,
            max_tokens=8,
            temperature=0,  # type: ignore[arg-type]
        )
        return completion.choices[0].message.content or ""
    chunks = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def _paid(node: LightningdDouble) -> list[dict[str, Any]]:
    return [i for i in node.rpc.listinvoices()["invoices"] if i["status"] == "paid"]


@pytest.mark.parametrize("kind", ["l402", "mpp"])
def test_a_node_buys_answers_from_another_with_its_own_client(
    seller: Instance,
    buyer: Instance,
    seller_lightning: LightningdDouble,
    buyer_lightning: LightningdDouble,
    kind: str,
) -> None:
    added = buyer.manage("providers", "add", seller.url, "--kind", kind, "--name", "seller")
    assert added.returncode == 0, added.stderr
    listed = _shell(
        buyer,
        "from apps.providers.models import ProviderModel; "
        "print(list(ProviderModel.objects.values_list('model_id', 'request_msat')))",
    )
    # The price the seller's manifest publishes: what a fresh token asks.
    assert f"('{MODEL}', {10 * PRICE_MSAT})" in listed

    client = _client(buyer)
    answers = [_asked(client, stream=False), _asked(client, stream=True)]

    assert all(answers), answers
    pays = buyer_lightning.rpc.listpays()["pays"]
    sold = _shell(
        seller,
        "from apps.sharing.models import Sale; print(Sale.objects.count(), "
        "sum(s.cost_msat for s in Sale.objects.all()))",
    ).split()
    assert int(sold[0]) == 2 and 0 < int(sold[1]) < PRICE_MSAT
    paid = [invoice["amount_msat"] for invoice in _paid(seller_lightning)]
    if kind == "l402":
        # Paid once, a token of SHARING_TOKEN_REQUESTS answers at their most (10 by default):
        # the kept token paid for the second answer.
        assert len(pays) == 1 and paid == [10 * PRICE_MSAT]
    else:
        # A charge is presented once by the buyer's client: one payment an answer, of what
        # an answer reserves (1 msat a token, a slot's context of the default 2048 tokens),
        # in whole sats as the draft states a charge: 2,048 msat rounded up to 3 sats.
        assert len(pays) == 2 and paid == [3000, 3000]
