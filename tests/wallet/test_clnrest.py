"""The wallet over CLNRest, with a rune of its own: the same payments, refusals and unknowns as
over the socket, a refused rune never taken for a failed payment, an untrusted certificate
refused before anything is sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.system.services import lightning_component
from apps.wallet import services
from apps.wallet.backends import cln, clnrest
from apps.wallet.backends.base import (
    METHODS_CALLED,
    NodeMissing,
    NodeRefused,
    NodeSilent,
    RuneRefused,
)
from apps.wallet.models import Payment
from apps.wallet.rune_setup import wanted_restrictions
from apps.wallet.services import NodeUnavailable, PayOrder
from tests.instances import ROOT
from tests.lightningd import LightningdDouble, certificates
from tests.wallet.conftest import household_node, invoice, rune_for, use_rest

pytestmark = pytest.mark.django_db
AMOUNT = 21_000


@pytest.fixture
def node(tmp_path: Path, payee: LightningdDouble, settings: Any) -> Iterator[LightningdDouble]:
    """The household's node, reached over CLNRest with the rune `wallet rune` would make.
    (test_faults.py runs every payment fault over CLNRest too.)"""
    yield from household_node(tmp_path, payee, settings, "clnrest")


def order_for(payee: LightningdDouble, purpose: str = "report") -> PayOrder:
    bolt11 = invoice(payee, AMOUNT)["bolt11"]
    return PayOrder(bolt11=bolt11, purpose=purpose, caller="test", max_amount_msat=AMOUNT,
                    max_fee_msat=1_000)  # fmt: skip


def pay(payee: LightningdDouble, purpose: str = "report") -> Payment:
    return services.pay(order_for(payee, purpose))


def paid_once(node: LightningdDouble, payee: LightningdDouble) -> None:
    assert [p["status"] for p in node.rpc.listpays()["pays"]] == ["complete"]
    [paid] = payee.rpc.listinvoices()["invoices"]
    assert paid["status"] == "paid" and paid["amount_received_msat"] == AMOUNT


def test_a_payment_over_clnrest_completes_once_with_its_proof(
    node: LightningdDouble, payee: LightningdDouble
) -> None:
    order = order_for(payee)

    payment, again = services.pay(order), services.pay(order)

    assert payment.state == Payment.State.COMPLETE and payment.proof_holds
    assert again.pk == payment.pk
    assert node.rest_requests > 0
    paid_once(node, payee)


def test_a_node_error_is_the_refusal_the_socket_gives(
    node: LightningdDouble, settings: Any
) -> None:
    over_rest = refusal_of("decode", string="lnbcrt1garbage")
    settings.LIGHTNING_REST_URL = ""
    settings.LIGHTNING_RPC = str(node.rpc_file)
    over_socket = refusal_of("decode", string="lnbcrt1garbage")

    assert over_rest == over_socket
    assert over_rest[0] == -32602


def refusal_of(method: str, **params: Any) -> tuple[int, str]:
    with pytest.raises(NodeRefused) as refused:
        cln.call(method, **params)
    return refused.value.code, str(refused.value)


def test_a_rune_without_xpay_is_refused_and_nothing_is_paid(
    node: LightningdDouble, payee: LightningdDouble, settings: Any, tmp_path: Path
) -> None:
    no_xpay = [[f"method={m}" for m in METHODS_CALLED if m != "xpay"]]
    use_rest(settings, node, rune_for(node, no_xpay), tmp_path / "narrower")
    bolt11 = invoice(payee, AMOUNT)["bolt11"]

    with pytest.raises(RuneRefused, match="The rune was refused for xpay: Not permitted") as no:
        cln.call("xpay", invstring=bolt11)
    payment = pay(payee)

    assert isinstance(no.value, NodeMissing)  # nothing was done: never a failed payment
    assert payment.state == "pending" and not payment.error
    assert node.rpc.listpays()["pays"] == []
    assert payee.rpc.listinvoices()["invoices"][0]["status"] == "unpaid"


def test_the_system_page_says_the_rune_was_refused(
    node: LightningdDouble, settings: Any, tmp_path: Path
) -> None:
    use_rest(settings, node, rune_for(node, [["method=decode"]]), tmp_path / "narrower")

    component = lightning_component()

    assert component.state == "down"
    assert "The rune was refused for getinfo" in component.detail


def test_a_certificate_from_another_ca_is_refused_before_anything_is_sent(
    node: LightningdDouble, payee: LightningdDouble, settings: Any, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    certificates.ensure(tmp_path / "elsewhere")
    settings.LIGHTNING_REST_CA = str(tmp_path / "elsewhere" / "ca.pem")

    with pytest.raises(NodeMissing, match="certificate is not trusted"):
        cln.call("getinfo")
    with pytest.raises(NodeUnavailable):
        pay(payee)

    assert node.rest_requests == 0
    assert node.rpc.listpays()["pays"] == []
    assert Payment.objects.count() == 0


def test_without_a_ca_file_the_nodes_own_certificate_is_not_trusted(
    node: LightningdDouble, settings: Any
) -> None:
    settings.LIGHTNING_REST_CA = ""  # the system's CAs never signed CLN's own

    with pytest.raises(NodeMissing, match="not trusted"):
        cln.call("getinfo")
    assert node.rest_requests == 0


@pytest.mark.parametrize(
    ("names", "host", "named"),
    [
        ((("DNS", "cln"), ("DNS", "localhost")), "10.21.21.96", True),
        ((("DNS", "localhost"), ("IP Address", "10.21.21.96")), "10.21.21.96", True),
        ((("DNS", "node.lan"),), "NODE.lan", True),
        ((("DNS", "localhost"), ("IP Address", "10.21.21.95")), "10.21.21.96", False),
        ((), "10.21.21.96", False),
    ],
)
def test_the_certificate_must_name_the_host_or_cln(
    names: tuple[tuple[str, str], ...], host: str, named: bool
) -> None:
    assert clnrest._names_node(names, host) is named


def test_the_rune_is_never_in_an_error_or_a_repr(node: LightningdDouble, tmp_path: Path) -> None:
    rune = rune_for(node, wanted_restrictions())
    broken = clnrest.RestNode(node.rest_url, "A" + rune, str(node.ca_file))

    with pytest.raises(RuneRefused) as refused:
        clnrest.call(broken, "getinfo", 5.0, {})

    assert rune not in str(refused.value) and "<rune>" in str(refused.value)
    assert rune not in repr(broken)


def test_a_missing_or_empty_rune_file_means_no_node(settings: Any, tmp_path: Path) -> None:
    settings.LIGHTNING_REST_URL = "https://127.0.0.1:9"
    settings.LIGHTNING_RUNE_FILE = str(tmp_path / "absent")
    with pytest.raises(NodeMissing, match="rune file cannot be read"):
        cln.call("getinfo")
    (tmp_path / "empty").write_text("\n")
    settings.LIGHTNING_RUNE_FILE = str(tmp_path / "empty")
    with pytest.raises(NodeMissing, match="does not hold a rune"):
        cln.call("getinfo")


def test_a_pasted_commando_env_file_gives_its_rune(tmp_path: Path) -> None:
    (tmp_path / ".commando-env").write_text('LIGHTNING_PUBKEY="02ab"\nLIGHTNING_RUNE="abc_-=="\n')

    assert clnrest.rune_read(str(tmp_path / ".commando-env")) == "abc_-=="


def test_the_rune_allows_exactly_the_methods_the_wallet_calls() -> None:
    called = set()
    for source in (ROOT / "apps").rglob("*.py"):
        called |= set(re.findall(r"cln\.call\(\s*\"([a-z-]+)\"", source.read_text()))

    assert called == set(METHODS_CALLED)
    assert wanted_restrictions() == [[f"method={m}" for m in METHODS_CALLED]]


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (500, b'{"code": null, "message": "Broken pipe", "data": null}', NodeSilent),
        (502, b"<html>Bad Gateway</html>", NodeSilent),
        (201, b"not json", NodeSilent),
        (500, b'{"code": 205, "message": "Failed", "data": null}', NodeRefused),
        (404, b'{"code": -32601, "message": "Unknown command", "data": null}', NodeRefused),
        (401, b'{"code": null, "message": "checkrune failed", "data": null}', RuneRefused),
    ],
    ids=["no code", "a proxy", "garbled", "an error", "unknown method", "rune"],
)
def test_what_clnrest_answers_is_mapped_so_that_unknown_is_never_failed(
    status: int, body: bytes, raised: type[Exception]
) -> None:
    node = clnrest.RestNode("https://127.0.0.1:9", "rune")

    with pytest.raises(raised):
        clnrest._result(node, "xpay", status, body)
