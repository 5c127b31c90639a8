"""Replaying the answers recorded from Core Lightning v26.06.6 against the doubles.

The recording (`data/cln-v26.06.6-transcript.json`, copied from the shared reference) was made
on regtest with two nodes, `payer` and `payee`, joined by one 1,000,000-sat channel. The replay
plays each call on the double of the same name, with the payee double's own invoices standing in
for the recorded ones (the same amounts, labels, descriptions and expiries), and compares answers:
the same keys everywhere, the same JSON types, equal values wherever they do not depend on keys,
clocks or randomness, and error codes and messages equal once invoices, hex and numbers are
blanked out.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from pyln.client import RpcError

from tests.lightningd.double import LightningdDouble

TRANSCRIPT = Path(__file__).parent / "data" / "cln-v26.06.6-transcript.json"
PAYEE_OFFLINE = "payee node offline"
# Values that differ from node to node or run to run; compared by their form only.
VARYING = {
    "id",
    "peer_id",
    "payee",
    "destination",
    "payment_hash",
    "payment_preimage",
    "preimage",
    "payment_secret",
    "bolt11",
    "signature",
    "created_at",
    "completed_at",
    "paid_at",
    "expires_at",
    "groupid",
    "txid",
    "funding_txid",
    "scratch_txid",
    "channel_id",
    "short_channel_id",
    "scriptpubkey",
    "address",
    "close_to_addr",
    "close_to",
    "psbt",
    "timestamp",
    "lightning-dir",
    "port",
    "color",
    "local",
    "remote",
    "blockheight",
    "direction",
}
HEX = re.compile(r"[0-9a-f]+")
INVOICE = re.compile(r"ln(bcrt|bc|tbs|tb)[0-9a-z]{20,}")


def exchanges() -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = json.loads(TRANSCRIPT.read_text())["exchanges"]
    return recorded


class Replay:
    """Plays recorded calls in order on the doubles named in the recording."""

    def __init__(self, nodes: dict[str, LightningdDouble]) -> None:
        self.nodes = nodes
        self.stand_ins: dict[str, str] = {}
        self.expiries: dict[str, int] = {}

    def play(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The double's answer, as `{"result": ...}` or `{"error": ...}`."""
        self._prepare(entry)
        params = self.translate(entry["params"])
        try:
            result = self.nodes[entry["node"]].rpc.call(entry["method"], params)
        except RpcError as error:
            return {"error": error.error}
        if entry["method"] == "invoice" and "result" in entry:
            for key in ("bolt11", "payment_hash", "payment_secret"):
                self.stand_ins[entry["result"][key]] = result[key]
            self.expiries[result["bolt11"]] = result["expires_at"]
        return {"result": result}

    def _prepare(self, entry: dict[str, Any]) -> None:
        """Bring about what the recording's situation needed."""
        if entry["note"] == PAYEE_OFFLINE:
            self.nodes["payee"].stop()
        if entry.get("error", {}).get("code") == 207:
            # The recorded call was made once the invoice had expired: wait for ours to.
            expires_at = self.expiries[self.translate(entry["params"]["invstring"])]
            time.sleep(max(0.0, expires_at + 1.05 - time.time()))

    def translate(self, value: Any) -> Any:
        """The recorded params with our stand-ins for the recorded invoices and hashes."""
        if isinstance(value, dict):
            return {key: self.translate(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.translate(item) for item in value]
        if isinstance(value, str):
            return self._stand_in(value)
        return value

    def _stand_in(self, text: str) -> str:
        if text in self.stand_ins:
            return self.stand_ins[text]
        for recorded, ours in self.stand_ins.items():
            same = _common_prefix(recorded, text)
            if same > 100:
                # A recorded invoice with its tail altered (the "bad checksum" call): alter ours.
                altered = ours[:same] + text[same:]
                return altered if altered != ours else ours[:-1] + ("p" if ours[-1] != "p" else "q")
        return text


def _common_prefix(first: str, second: str) -> int:
    size = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        size += 1
    return size


def differences(recorded: Any, actual: Any, where: str = "") -> list[str]:
    """How the double's answer differs from the recorded one (empty when it matches)."""
    if type(recorded) is not type(actual):
        return [f"{where}: {type(actual).__name__} where CLN gave {type(recorded).__name__}"]
    if isinstance(recorded, dict):
        return _dict_differences(recorded, actual, where)
    if isinstance(recorded, list):
        if len(recorded) != len(actual):
            return [f"{where}: {len(actual)} items where CLN gave {len(recorded)}"]
        found: list[str] = []
        for index, (old, new) in enumerate(zip(recorded, actual, strict=True)):
            found += differences(old, new, f"{where}[{index}]")
        return found
    key = where.rsplit(".", 1)[-1].split("[")[0]
    if key in VARYING:
        return [] if same_form(key, recorded, actual) else [f"{where}: {actual!r} ≁ {recorded!r}"]
    return [] if recorded == actual else [f"{where}: {actual!r} where CLN gave {recorded!r}"]


def _dict_differences(recorded: dict[str, Any], actual: dict[str, Any], where: str) -> list[str]:
    found = []
    if set(recorded) != set(actual):
        missing = sorted(set(recorded) - set(actual))
        extra = sorted(set(actual) - set(recorded))
        found.append(f"{where or 'answer'}: missing {missing}, extra {extra}")
    for key in recorded.keys() & actual.keys():
        found += differences(recorded[key], actual[key], f"{where}.{key}")
    return found


def same_form(key: str, recorded: Any, actual: Any) -> bool:
    """Two values that may differ but must look alike: hex of the same size, and so on."""
    if not isinstance(recorded, str):
        return True
    if HEX.fullmatch(recorded):
        # DER signatures are 70 to 72 bytes.
        close = key == "signature" or len(actual) == len(recorded)
        return bool(HEX.fullmatch(actual)) and close
    invoice = INVOICE.match(recorded)
    if invoice:
        return str(actual).startswith("ln" + invoice.group(1))
    if re.fullmatch(r"\d+x\d+x\d+", recorded):
        return bool(re.fullmatch(r"\d+x\d+x\d+", actual))
    return recorded[:5] == actual[:5] if recorded.startswith("bcrt1") else True


def same_message(recorded: str, actual: str) -> bool:
    """Messages equal once invoices, long hex and numbers are blanked out."""
    return _blank(recorded) == _blank(actual)


def _blank(message: str) -> str:
    message = INVOICE.sub("<invoice>", message)
    message = re.sub(r"[0-9a-f]{16,}", "<hex>", message)
    return re.sub(r"\d+", "<n>", message)
