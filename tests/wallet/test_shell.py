"""`manage.py wallet`: exit codes a script can act on, received invoices synced from the shell,
and a node that hangs slowing neither `wallet status` nor /healthz."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.wallet import services
from apps.wallet.management.commands import wallet as command
from apps.wallet.models import Invoice, Payment
from tests.lightningd import LightningdDouble
from tests.wallet.conftest import invoice

pytestmark = pytest.mark.django_db
HANG = 30.0  # seconds the node takes to answer, far beyond what a page may wait


def wallet(*argv: str) -> tuple[int, str]:
    """The exit code `manage.py wallet ...` would give, and what it printed."""
    out = io.StringIO()
    try:
        call_command("wallet", *argv, stdout=out, stderr=io.StringIO())
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    except CommandError as error:
        return error.returncode, str(error)
    return 0, out.getvalue()


def pay(bolt11: str, purpose: str = "shell") -> tuple[int, str]:
    return wallet("pay", bolt11, "--purpose", purpose, "--max-sat", "100", "--max-fee-sat", "1")


def test_pay_exits_0_when_paid(node: LightningdDouble, payee: LightningdDouble) -> None:
    code, printed = pay(invoice(payee, 21_000)["bolt11"])

    assert code == command.EXIT_PAID == 0
    assert printed.startswith("complete\t21000 msat")


def test_pay_exits_3_when_the_payment_failed(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    node.faults.next_xpay("no_route")

    code, printed = pay(invoice(payee, 21_000)["bolt11"])

    assert code == command.EXIT_FAILED == 3
    assert printed.startswith("failed\t") and "205" in printed


def test_pay_exits_4_when_the_outcome_is_not_known(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    node.faults.next_xpay("drop", paid=False)

    code, printed = pay(invoice(payee, 21_000)["bolt11"])

    assert code == command.EXIT_PENDING == 4
    assert printed.startswith("pending\t")
    assert Payment.objects.get().state == "pending"


def test_pay_exits_5_when_refused_and_reserves_nothing(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    code, printed = pay(invoice(payee, 500_000)["bolt11"])  # more than --max-sat 100

    assert code == command.EXIT_REFUSED == 5
    assert "more than the 100000 msat agreed" in printed
    assert not Payment.objects.exists()


def test_paying_a_used_purpose_with_another_invoice_says_so_plainly(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    first = invoice(payee, 21_000)["bolt11"]
    assert pay(first)[0] == 0

    code, printed = pay(invoice(payee, 5_000)["bolt11"])
    assert code == command.EXIT_REFUSED
    assert "already used for another invoice" in printed and "was not paid" in printed

    code, printed = pay(first)  # the same invoice again: its payment, said to be earlier
    assert code == 0 and printed.startswith("This purpose already paid this invoice")
    assert len(node.rpc.listpays()["pays"]) == 1


def test_reconcile_also_learns_which_invoices_were_paid(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    code, bolt11 = wallet("invoice", "15", "a summary", "--purpose", "sale-shell")
    assert code == 0
    payee.rpc.xpay(bolt11.strip())

    code, printed = wallet("reconcile")

    assert code == 0 and json.loads(printed)["invoices_updated"] == 1
    assert Invoice.objects.get().state == Invoice.State.PAID


def hang(node: LightningdDouble, settings: Any) -> None:
    """The node takes HANG seconds to answer getinfo, within the call's own deadline."""
    settings.LIGHTNING_TIMEOUT = HANG + 10
    node.faults.next_call("getinfo", "slow", seconds=HANG)


def test_a_hung_node_does_not_hold_up_healthz(
    node: LightningdDouble, settings: Any, client: Client
) -> None:
    hang(node, settings)

    started = time.monotonic()
    health = client.get("/healthz").json()
    took = time.monotonic() - started

    [lightning] = [c for c in health["components"] if c["name"] == "lightning"]
    assert lightning["state"] == "down" and "has not answered" in lightning["detail"]
    assert took < HANG / 3  # the node was still hanging when the answer came


def test_a_hung_node_shows_its_last_answer_marked_slow(
    node: LightningdDouble, settings: Any, client: Client
) -> None:
    assert services.node_summary(wait=30)["connected"]  # an answer to remember
    hang(node, settings)

    started = time.monotonic()
    health = client.get("/healthz").json()
    took = time.monotonic() - started

    [lightning] = [c for c in health["components"] if c["name"] == "lightning"]
    assert lightning["state"] == "up" and "slow to answer now" in lightning["detail"]
    assert node.node_id[:12] in lightning["detail"]
    assert took < HANG / 3


def test_wallet_status_does_not_wait_on_a_hung_node(node: LightningdDouble, settings: Any) -> None:
    hang(node, settings)

    started = time.monotonic()
    code, printed = wallet("status")

    assert code == 0 and json.loads(printed)["connected"] is False
    assert time.monotonic() - started < HANG / 3


def test_the_wallet_page_shows_a_hung_nodes_last_answer(
    node: LightningdDouble, settings: Any, owner_client: Client
) -> None:
    assert node.node_id in owner_client.get("/wallet/").content.decode()
    hang(node, settings)

    started = time.monotonic()
    page = owner_client.get("/wallet/").content.decode()

    assert node.node_id in page and "slow to answer now" in page
    assert time.monotonic() - started < HANG / 3
