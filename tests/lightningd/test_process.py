"""The double as its own process: `python -m tests.lightningd serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyln.client import RpcError

from apps.wallet.backends import clnrest
from apps.wallet.backends.base import NodeMissing
from tests.lightningd import LightningdDouble, ProcessDouble

pytestmark = pytest.mark.processes


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ProcessDouble]:
    with ProcessDouble(tmp_path / "process", alias="process") as double:
        yield double


def test_it_starts_answers_getinfo_and_stops(node: ProcessDouble) -> None:
    info = node.rpc.getinfo()

    assert (info["alias"], info["network"], info["id"]) == ("process", "regtest", node.node_id)
    node.stop()
    assert not node.rpc_file.exists()
    with pytest.raises(OSError):
        node.rpc.getinfo()


def test_it_pays_a_double_in_this_process_and_takes_faults_over_its_socket(
    node: ProcessDouble, payee: LightningdDouble
) -> None:
    node.connect(payee)
    invoice = payee.rpc.invoice(10_000, "across", "across processes")
    node.faults.next_xpay("no_route")
    assert node.faults.queued() == [{"method": "xpay", "fault": "no_route", "options": {}}]

    with pytest.raises(RpcError) as refused:
        node.rpc.xpay(invoice["bolt11"])
    paid = node.rpc.xpay(invoice["bolt11"])

    assert refused.value.error["code"] == 205
    assert payee.rpc.listinvoices(label="across")["invoices"][0]["status"] == "paid"
    assert paid["payment_preimage"] == payee.rpc.listinvoices()["invoices"][0]["payment_preimage"]


def test_a_killed_double_comes_back_as_the_same_node(node: ProcessDouble) -> None:
    invoice = node.rpc.invoice(1000, "before", "made before the crash")
    node.kill()

    node.start()

    assert node.rpc.getinfo()["id"] == node.node_id
    assert node.rpc.listinvoices(label="before")["invoices"][0]["bolt11"] == invoice["bolt11"]


def test_an_unknown_fault_is_refused_over_the_socket(node: ProcessDouble) -> None:
    with pytest.raises(RpcError) as refused:
        node.faults.next_xpay("stuck")

    assert refused.value.error["code"] == -32602


def test_it_serves_clnrest_on_the_same_port_after_a_kill(tmp_path: Path) -> None:
    with ProcessDouble(tmp_path / "rest", alias="rest", rest=True) as double:
        rune = double.rpc.call("createrune", {"restrictions": [["method=getinfo"]]})["rune"]
        node = clnrest.RestNode(double.rest_url, rune, str(double.ca_file))
        url = double.rest_url
        double.kill()
        with pytest.raises(NodeMissing):
            clnrest.call(node, "getinfo", 5.0, {})
        double.start()

        assert double.rest_url == url
        assert clnrest.call(node, "getinfo", 5.0, {})["id"] == double.node_id
