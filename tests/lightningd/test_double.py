"""The double answers as Core Lightning v26.06.6 did, and speaks pyln-client's framing."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from pyln.client import LightningRpc, RpcError

from tests.lightningd import LightningdDouble
from tests.lightningd.transcript import Replay, differences, exchanges, same_message


def _mismatch(entry: dict[str, Any], answer: dict[str, Any]) -> list[str]:
    label = f"{entry['node']} {entry['method']} ({entry['note'] or 'no note'})"
    if "error" in entry:
        error = answer.get("error")
        if not isinstance(error, dict):
            return [f"{label}: answered {answer!r} where CLN failed with {entry['error']}"]
        wrong_code = error["code"] != entry["error"]["code"]
        if wrong_code or not same_message(entry["error"]["message"], error["message"]):
            return [f"{label}: {error} where CLN failed with {entry['error']}"]
        return []
    if "result" not in answer:
        return [f"{label}: failed with {answer['error']} where CLN answered"]
    return [f"{label} {problem}" for problem in differences(entry["result"], answer["result"])]


def test_every_recorded_call_gets_core_lightnings_answer(
    payer: LightningdDouble, payee: LightningdDouble
) -> None:
    replay = Replay({"payer": payer, "payee": payee})
    mismatches: list[str] = []
    for entry in exchanges():
        mismatches += _mismatch(entry, replay.play(entry))
    assert mismatches == []


def test_the_replay_notices_a_missing_field_and_a_wrong_code() -> None:
    recorded = {"pays": [{"status": "complete", "preimage": "ab" * 32}]}
    assert differences(recorded, {"pays": [{"status": "complete"}]}) == [
        ".pays[0]: missing ['preimage'], extra []"
    ]
    assert differences(recorded, {"pays": [{"status": "failed", "preimage": "cd" * 32}]}) == [
        ".pays[0].status: 'failed' where CLN gave 'complete'"
    ]
    entry = {"node": "payer", "method": "xpay", "note": "", "error": {"code": 219, "message": "x"}}
    assert _mismatch(entry, {"error": {"code": 205, "message": "x"}}) != []


def test_recorded_invoices_decode_to_exactly_what_core_lightning_said(
    payee: LightningdDouble,
) -> None:
    recorded = [e for e in exchanges() if e["method"] == "decode" and "result" in e]

    for entry in recorded:
        assert payee.rpc.decode(entry["params"]["string"]) == entry["result"]
    assert len(recorded) == 3


def test_the_double_signs_its_invoices_with_its_node_key(payee: LightningdDouble) -> None:
    invoice = payee.rpc.invoice(1000, "signed", "signed by the node")
    decoded = payee.rpc.decode(invoice["bolt11"])
    assert decoded["payee"] == payee.node_id
    assert decoded["payment_hash"] == invoice["payment_hash"]
    assert invoice["bolt11"].startswith("lnbcrt10n1")


@pytest.mark.parametrize(("network", "prefix"), [("bitcoin", "lnbc"), ("testnet", "lntb")])
def test_invoices_carry_the_network_prefix(tmp_path: Any, network: str, prefix: str) -> None:
    with LightningdDouble(tmp_path, network=network) as node:
        invoice = node.rpc.invoice(5000, "net", "which network")
        assert node.rpc.getinfo()["network"] == network
    assert invoice["bolt11"].startswith(prefix + "50n1")
    assert node.rpc_file == tmp_path / network / "lightning-rpc"


def _raw_call(path: str, *requests: dict[str, Any]) -> bytes:
    """Requests written back to back with no terminator, as pyln-client writes them."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(path)
        for request in requests:
            connection.sendall(json.dumps(request).encode())
        received = b""
        while received.count(b"\n\n") < len(requests):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_each_answer_is_one_json_object_and_a_blank_line(payee: LightningdDouble) -> None:
    received = _raw_call(
        str(payee.rpc_file),
        {"jsonrpc": "2.0", "id": "t:notifications#1", "method": "notifications", "params": {}},
        {"jsonrpc": "2.0", "id": 7, "method": "getinfo", "params": {}},
    )
    first, second, rest = received.split(b"\n\n")
    assert json.loads(first) == {"jsonrpc": "2.0", "id": "t:notifications#1", "result": {}}
    assert json.loads(second)["id"] == 7
    assert json.loads(second)["result"]["id"] == payee.node_id
    assert rest == b""


def test_notifications_and_filters_work_through_pyln_client(payee: LightningdDouble) -> None:
    rpc = LightningRpc(str(payee.rpc_file))
    with rpc.notify(lambda **kwargs: None):
        assert rpc.getinfo()["alias"] == "payee"
    assert rpc.call("getinfo", filter={"id": True, "version": True}) == {
        "id": payee.node_id,
        "version": "v26.06.6",
    }


def test_parameters_are_checked_with_lightningds_messages(payee: LightningdDouble) -> None:
    with pytest.raises(RpcError) as missing:
        payee.rpc.call("invoice", {"amount_msat": 1000, "label": "x"})
    assert missing.value.error == {
        "code": -32602,
        "message": "missing required parameter: description",
    }
    with pytest.raises(RpcError) as unknown:
        payee.rpc.call("getinfo", {"colour": "red"})
    assert unknown.value.error["message"].startswith("unknown parameter: colour")
    with pytest.raises(RpcError) as command:
        payee.rpc.call("decodepay", {"bolt11": "lnbcrt1"})
    assert command.value.error == {"code": -32601, "message": "Unknown command 'decodepay'"}


def test_positional_parameters_are_accepted(payee: LightningdDouble) -> None:
    invoice = payee.rpc.invoice(2000, "positional", "by position")
    listed = payee.rpc.call("listinvoices", ["positional"])
    assert listed["invoices"][0]["payment_hash"] == invoice["payment_hash"]
