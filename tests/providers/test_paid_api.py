"""A program pays for an outside model through Sovereign's /v1 with the official `openai`
client, and a web process killed while paying leaves a payment the reconciler settles, whose
token the next question uses: nothing is paid twice.

Real processes: Sovereign's web server, the household's lightningd double in its own process;
in this process, an Aperture-shaped L402 provider and the provider's own node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from nostr_sdk import Keys

from tests.instances import Instance, children, command_line, is_running, wait_for
from tests.lightningd import LightningdDouble, ProcessDouble
from tests.providers.doubles.l402 import L402Double

pytestmark = pytest.mark.processes
PRICE = 21_000
MODEL = "aperture/strong-1"


@pytest.fixture
def provider_lightning(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "provider-node", alias="provider") as node:
        yield node


@pytest.fixture
def household(tmp_path: Path, provider_lightning: LightningdDouble) -> Iterator[ProcessDouble]:
    with ProcessDouble(tmp_path / "household", alias="household") as double:
        double.connect(provider_lightning)
        yield double


@pytest.fixture
def aperture(provider_lightning: LightningdDouble) -> Iterator[L402Double]:
    with L402Double(provider_lightning, price_msat=PRICE) as double:
        yield double


@pytest.fixture
def node(
    make_instance: Callable[..., Instance], household: ProcessDouble, aperture: L402Double
) -> Instance:
    """A node whose web process waits minutes for the Lightning node's answer: however slow
    the machine, it is still waiting when a test kills it."""
    made = make_instance(
        SOVEREIGN_LIGHTNING_RPC=str(household.rpc_file), SOVEREIGN_LIGHTNING_PAY_SECONDS="120"
    )
    supervisor = made.run("web")
    made.wait_until("web", "up")
    made.supervisor = supervisor  # type: ignore[attr-defined]
    owner = Keys.generate()
    made.claim(owner)
    created = made.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "t")
    made.api_key = created.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    code = (
        "from apps.providers import services; "
        f"services.provider_add({aperture.url!r}, kind='l402', name='aperture')"
    )
    added = made.manage("shell", "-c", code)
    assert added.returncode == 0, added.stderr
    return made


def client(node: Instance) -> openai.OpenAI:
    key = node.api_key  # type: ignore[attr-defined]
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0, timeout=300)


def shell_json(node: Instance, code: str) -> Any:
    ran = node.manage("shell", "-c", f"import json; {code}")
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.strip().splitlines()[-1])


def journal(node: Instance) -> list[dict[str, Any]]:
    code = (
        "from apps.wallet.models import Payment; print(json.dumps(list("
        "Payment.objects.order_by('id').values('caller', 'state', 'amount_msat'))))"
    )
    return shell_json(node, code)  # type: ignore[no-any-return]


def egress(node: Instance) -> list[dict[str, Any]]:
    code = (
        "from apps.privacy.models import Egress; print(json.dumps(list("
        "Egress.objects.order_by('id').values('model', 'outcome', 'body', 'cost_msat'))))"
    )
    return shell_json(node, code)  # type: ignore[no-any-return]


def test_the_official_client_gets_a_paid_answer_whole_and_streamed(
    node: Instance, aperture: L402Double, household: ProcessDouble
) -> None:
    listed = {model.id: model for model in client(node).models.list()}
    assert listed[MODEL].model_extra["sovereign"]["price_msat"] == PRICE  # type: ignore[index]

    whole = client(node).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "what is a sat"}]
    )
    assert whole.choices[0].message.content == "l402 answers: what is a sat"
    provenance = whole.model_extra["sovereign"]  # type: ignore[index]
    assert (provenance["provider"], provenance["cost_msat"]) == ("aperture", PRICE)

    stream = client(node).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "and a bitcoin"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "l402 answers: and a bitcoin"

    assert journal(node) == [{"caller": "provider:aperture", "state": "complete",
                              "amount_msat": PRICE}]  # fmt: skip
    assert aperture.challenges == 1  # the second answer used the kept token
    sent = egress(node)
    assert [row["outcome"] for row in sent] == ["answered", "answered"]
    assert [row["cost_msat"] for row in sent] == [PRICE, 0]  # the fee: none over a direct channel
    assert json.loads(sent[1]["body"]) == aperture.requests[-1]


def test_a_web_process_killed_while_paying_leaves_a_token_the_next_question_uses(
    node: Instance, aperture: L402Double, household: ProcessDouble
) -> None:
    household.faults.next_xpay("held")
    asking = threading.Thread(target=_ask_ignoring_failure, args=(node,), daemon=True)
    asking.start()
    wait_for(lambda: _statuses(household) == ["pending"], 120, "the payment in flight")
    assert [row["state"] for row in journal(node)] == ["pending"]

    _kill_web(node)
    [payment] = household.rpc.listpays()["pays"]
    household.release(payment["payment_hash"])
    wait_for(lambda: _statuses(household) == ["complete"], 120, "the node to complete it")
    reconciled = node.manage("wallet", "reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    assert [row["state"] for row in journal(node)] == ["complete"]

    answer = client(node).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "after the crash"}]
    )
    assert answer.choices[0].message.content == "l402 answers: after the crash"
    assert len(journal(node)) == 1 and _statuses(household) == ["complete"]  # paid once
    assert aperture.challenges == 1


def _ask_ignoring_failure(node: Instance) -> None:
    with contextlib.suppress(openai.OpenAIError):  # the web process is killed under it
        client(node).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "before the crash"}]
        )


def _statuses(double: ProcessDouble) -> list[str]:
    return [pay["status"] for pay in double.rpc.listpays()["pays"]]


def _kill_web(node: Instance) -> None:
    """SIGKILL the web server; its supervisor starts a new one."""
    supervisor = node.supervisor  # type: ignore[attr-defined]
    web = next(pid for pid in children(supervisor.pid) if b"uvicorn" in command_line(pid))
    os.kill(web, signal.SIGKILL)

    def restarted() -> int | None:
        servers = [p for p in children(supervisor.pid) if b"uvicorn" in command_line(p)]
        return next((p for p in servers if p != web and is_running(p)), None)

    wait_for(restarted, 120, "a new web process")
    node.wait_until("web", "up", timeout=120)
