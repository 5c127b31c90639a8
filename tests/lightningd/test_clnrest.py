"""The double's CLNRest answers as Core Lightning's own tests expect (tests/test_clnrest.py and
tests/test_runes.py in the lightning repository), over HTTPS checked against its CA."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyln.client import RpcError

from tests.lightningd import LightningdDouble


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "node", alias="node", rest=True) as double:
        yield double


def post(
    node: LightningdDouble, path: str, rune: str | None = None, body: Any = None, verb: str = "POST"
) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(node.ca_file))
    context.check_hostname = False  # cln-grpc's certificate names "cln" and "localhost" only
    connection = http.client.HTTPSConnection("127.0.0.1", node.rest_port, context=context)
    headers = {"Content-Type": "application/json"}
    if rune is not None:
        headers["Rune"] = rune
    data = None if body is None else json.dumps(body)
    try:
        connection.request(verb, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def createrune(node: LightningdDouble, *restrictions: list[str]) -> str:
    return str(node.rpc.call("createrune", {"restrictions": list(restrictions)})["rune"])


def test_the_certificate_is_signed_by_the_ca_and_names_cln(node: LightningdDouble) -> None:
    context = ssl.create_default_context(cafile=str(node.ca_file))
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", node.rest_port)),
        server_hostname="cln",
    ) as tls:
        certificate = tls.getpeercert()

    assert certificate is not None
    assert certificate["subjectAltName"] == (("DNS", "cln"), ("DNS", "localhost"))


def test_rpc_methods_answer_as_clnrest_does(node: LightningdDouble) -> None:
    assert post(node, "/v1/getinfo") == (
        403,
        {"code": 1501, "message": "Not authorized: Missing rune", "data": None},
    )
    no_getinfo = createrune(node, ["method/getinfo"])
    assert post(node, "/v1/getinfo", no_getinfo) == (
        401,
        {"code": 1502, "message": "Not permitted: method is equal to getinfo", "data": None},
    )
    status, info = post(node, "/v1/getinfo", createrune(node, ["method=getinfo"]))
    assert (status, info["id"]) == (201, node.node_id)
    status, error = post(node, "/v1/invoice", createrune(node, ["method=invoice"]))
    assert (status, error["code"]) == (500, -32602)
    status, made = post(
        node,
        "/v1/invoice",
        createrune(node, ["method=invoice"]),
        {"amount_msat": 50_000_000, "label": "label", "description": "description"},
    )
    assert status == 201 and made["bolt11"].startswith("lnbcrt500u")


def test_unknown_methods_and_verbs_answer_as_clnrest_does(node: LightningdDouble) -> None:
    rune = createrune(node)
    assert post(node, "/v1/unknown-get", rune, verb="GET") == (
        405,
        {
            "code": -32601,
            "message": "Path invalid, http_method must be POST for CLN methods",
            "data": None,
        },
    )
    assert post(node, "/v1/unknown-post", rune) == (
        404,
        {"code": -32601, "message": "Unknown command 'unknown-post'", "data": None},
    )


def test_runes_are_checked_with_core_lightnings_wording(node: LightningdDouble) -> None:
    rune = createrune(node, ["method=getinfo", "method=xpay"], ["pnum<1"])

    assert node.rpc.call("checkrune", {"rune": rune, "method": "getinfo"}) == {"valid": True}
    with pytest.raises(RpcError) as refused:
        node.rpc.call("checkrune", {"rune": rune, "method": "withdraw"})
    assert refused.value.error == {
        "code": 1502,
        "message": "Not permitted: method is not equal to getinfo AND method is not equal to xpay",
    }
    with pytest.raises(RpcError) as too_many:
        node.rpc.call("checkrune", {"rune": rune, "method": "getinfo", "params": {"a": 1}})
    assert (
        too_many.value.error["message"]
        == "Not permitted: number of parameters is greater or equal to 1"
    )


def test_a_rune_of_another_node_is_not_authorized(node: LightningdDouble, tmp_path: Path) -> None:
    with LightningdDouble(tmp_path / "other", alias="other") as other:
        foreign = createrune(other, ["method=getinfo"])

    status, error = post(node, "/v1/getinfo", foreign)

    assert (status, error["code"]) == (401, 1501)
    assert error["message"] == "Not authorized: Not derived from master"
    assert node.rpc.call("showrunes", {"rune": foreign})["runes"][0]["our_rune"] is False


def test_createrune_gives_unique_ids_and_showrunes_their_english(node: LightningdDouble) -> None:
    first = node.rpc.call("createrune", {})
    second = node.rpc.call("createrune", {"restrictions": "readonly"})

    assert (first["unique_id"], second["unique_id"]) == ("0", "1")
    assert "warning_unrestricted_rune" in first and "warning_unrestricted_rune" not in second
    shown = node.rpc.call("showrunes", {})["runes"]
    assert [r["rune"] for r in shown] == [first["rune"], second["rune"]]
    assert shown[1]["restrictions_as_english"] == (
        "method starts with list OR method starts with get OR method equal to summary "
        "AND method unequal to listdatastore"
    )


def test_runes_survive_a_restart(node: LightningdDouble) -> None:
    rune = createrune(node, ["method=getinfo"])
    port = node.rest_port
    node.stop()
    node.start()

    assert node.rest_port == port
    assert post(node, "/v1/getinfo", rune)[0] == 201


def test_a_dropped_call_closes_the_https_connection_without_an_answer(
    node: LightningdDouble,
) -> None:
    node.faults.next_call("getinfo", "drop")

    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        post(node, "/v1/getinfo", createrune(node))
