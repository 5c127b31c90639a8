"""A worker paying is killed outright (SIGKILL) at each point of a payment; after the restart
the reconciler settles the payment from the node's records, and nothing is paid twice.

The node is a lightningd double in its own process; the worker is a real Celery worker.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.instances import Instance, children, command_line, is_running, wait_for
from tests.lightningd import LightningdDouble, ProcessDouble

pytestmark = pytest.mark.processes
AMOUNT = 21_000


@pytest.fixture
def household_node(tmp_path: Path, payee: LightningdDouble) -> Iterator[ProcessDouble]:
    with ProcessDouble(tmp_path / "household", alias="household") as double:
        double.connect(payee)
        yield double


def instance(
    make: Callable[..., Instance], double: ProcessDouble, pay_seconds: int, database: dict[str, str]
) -> Instance:
    made = make(
        SOVEREIGN_LIGHTNING_RPC=str(double.rpc_file),
        SOVEREIGN_LIGHTNING_PAY_SECONDS=str(pay_seconds),
        **database,  # SQLite in the node's data directory, or PostgreSQL
    )
    made.serve_web()  # prepares the database; and tells whether the worker is up
    # On PostgreSQL, no SQLite file was made: the journal read below is PostgreSQL's.
    assert (made.data_dir / "sovereign.sqlite3").exists() == ("DATABASE_URL" not in database)
    return made


@pytest.fixture
def node(
    make_instance: Callable[..., Instance],
    household_node: ProcessDouble,
    database_environment: dict[str, str],
) -> Instance:
    """Payments past their deadline within seconds: for a row the node never heard of."""
    return instance(make_instance, household_node, 1, database_environment)


@pytest.fixture
def patient_node(
    make_instance: Callable[..., Instance],
    household_node: ProcessDouble,
    database_environment: dict[str, str],
) -> Instance:
    """The worker waits minutes for xpay's answer, so however slow the machine, it is still
    waiting when the test kills it."""
    return instance(make_instance, household_node, 120, database_environment)


def ask_to_pay(node: Instance, bolt11: str, purpose: str = "crash") -> None:
    code = (f"from apps.wallet.tasks import pay; pay.delay({bolt11!r}, {purpose!r}, 'agent:1',"
            f" {AMOUNT}, 1000)")  # fmt: skip
    sent = node.manage("shell", "-c", code)
    assert sent.returncode == 0, sent.stderr


def journal(node: Instance) -> list[dict[str, Any]]:
    code = ("import json; from apps.wallet.models import Payment; print(json.dumps(list("
            "Payment.objects.values('purpose', 'state', 'preimage'))))")  # fmt: skip
    return json.loads(node.manage("shell", "-c", code).stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def states(node: Instance) -> list[str]:
    return [row["state"] for row in journal(node)]


def statuses(double: Any) -> list[str]:
    return [pay["status"] for pay in double.rpc.listpays()["pays"]]


def settles_as(node: Instance, state: str) -> bool:
    """Reconcile once; whoever settled it (this call or the worker's own reconciler), is the
    journal's one row now in `state`?"""
    reconcile(node)
    return states(node) == [state]


def reconcile(node: Instance) -> dict[str, int]:
    return json.loads(node.manage("wallet", "reconcile").stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def kill_worker(supervisor: Any) -> int:
    """SIGKILL the worker and its pool processes at once; the supervisor starts a new one."""
    worker = next(pid for pid in children(supervisor.pid) if b"celery" in command_line(pid))
    os.killpg(worker, signal.SIGKILL)
    return worker


def wait_for_new_worker(node: Instance, supervisor: Any, old: int) -> None:
    def restarted() -> int | None:
        workers = [p for p in children(supervisor.pid) if b"celery" in command_line(p)]
        return next((p for p in workers if p != old and is_running(p)), None)

    wait_for(restarted, 120, "a new worker process")
    node.wait_until("worker", "up", timeout=120)


def paid_once(household_node: ProcessDouble, payee: LightningdDouble, node: Instance) -> None:
    assert statuses(household_node) == ["complete"]
    [invoice] = payee.rpc.listinvoices()["invoices"]
    assert (invoice["status"], invoice["amount_received_msat"]) == ("paid", AMOUNT)
    [row] = journal(node)
    assert row["state"] == "complete" and row["preimage"] == invoice["payment_preimage"]


def test_killed_after_the_pending_row_is_written(
    node: Instance, household_node: ProcessDouble, payee: LightningdDouble
) -> None:
    crashing = node.start(sys.executable, "-m", "tests.wallet.crashing_worker")
    ask_to_pay(node, payee.rpc.invoice(AMOUNT, "a", "crash")["bolt11"])
    assert crashing.wait(timeout=60) == -signal.SIGKILL
    assert states(node) == ["pending"] and statuses(household_node) == []

    node.run("worker")
    node.wait_until("worker", "up", timeout=120)
    wait_for(lambda: settles_as(node, "failed"), 120, "the payment to be settled as failed")

    assert statuses(household_node) == []  # it never reached the node: nothing was paid
    assert payee.rpc.listinvoices()["invoices"][0]["status"] == "unpaid"


def test_killed_during_the_node_call(
    patient_node: Instance, household_node: ProcessDouble, payee: LightningdDouble
) -> None:
    node = patient_node
    supervisor = node.run("worker")
    node.wait_until("worker", "up", timeout=120)
    # Held in flight until released below: however slow the machine, the worker is killed
    # while the node is paying, and no clock decides when the payment completes.
    household_node.faults.next_xpay("held")
    made = payee.rpc.invoice(AMOUNT, "b", "crash")
    ask_to_pay(node, made["bolt11"])
    wait_for(lambda: statuses(household_node) == ["pending"], 120, "the payment in flight")

    wait_for_new_worker(node, supervisor, kill_worker(supervisor))
    assert reconcile(node)["pending"] == 1  # in flight: neither failed nor paid again
    assert statuses(household_node) == ["pending"]
    household_node.release(made["payment_hash"])
    wait_for(lambda: statuses(household_node) == ["complete"], 120, "the node to complete it")

    wait_for(lambda: settles_as(node, "complete"), 120, "the payment to be settled")

    paid_once(household_node, payee, node)


def test_killed_after_the_node_paid_before_the_row_was_updated(
    patient_node: Instance, household_node: ProcessDouble, payee: LightningdDouble
) -> None:
    node = patient_node
    supervisor = node.run("worker")
    node.wait_until("worker", "up", timeout=120)
    # Paid at once; the answer is held back far longer than the test takes to kill the worker.
    household_node.faults.next_xpay("slow", seconds=600.0)
    ask_to_pay(node, payee.rpc.invoice(AMOUNT, "c", "crash")["bolt11"])
    wait_for(lambda: statuses(household_node) == ["complete"], 60, "the node to pay")
    assert states(node) == ["pending"]

    wait_for_new_worker(node, supervisor, kill_worker(supervisor))

    # The new worker reconciles as it starts: no one needs to ask, nor waits for the beat.
    wait_for(lambda: states(node) == ["complete"], 120, "the reconciler at the worker's start")
    assert "Reconciled payments at the worker's start: {'complete': 1" in node.logs()
    paid_once(household_node, payee, node)
