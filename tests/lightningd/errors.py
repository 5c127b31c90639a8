"""The error answers of Core Lightning v26.06, as the double gives them.

Codes are CLN's (`common/jsonrpc_errors.h`); lightning.md §4.2 lists the ones a payer meets, and
the recorded transcript shows their exact messages.
"""

from __future__ import annotations

import json
from typing import Any

# JSON-RPC's own codes.
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
# CLN's catch-all, and what lightningd answers when the plugin behind a command dies mid-call.
LIGHTNINGD = -1
PLUGIN_ERROR = -3  # xpay's answer to an injectpaymentonion error it does not expect
PLUGIN_TERMINATED = -4
# Paying (lightning.md §4.2: xpay and pay).
PAY_IN_PROGRESS = 200
PAY_DESTINATION_PERM_FAIL = 203
PAY_ROUTE_NOT_FOUND = 205
PAY_ROUTE_TOO_EXPENSIVE = 206
PAY_INVOICE_EXPIRED = 207
PAY_UNSPECIFIED_ERROR = 209
PAY_ALREADY_PAID = 219
# Receiving.
INVOICE_LABEL_ALREADY_EXISTS = 900
INVOICE_PREIMAGE_ALREADY_EXISTS = 901
INVOICE_WAIT_TIMED_OUT = 904

NO_USABLE_PATHS = "We could not find a usable set of paths."


class RpcFailure(Exception):
    """A command failed: lightningd answers `{"code": ..., "message": ...}`."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    def as_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def bad_param(name: str, problem: str, value: Any) -> RpcFailure:
    """CLN's `command_fail_badparam`: `<name>: <problem>: invalid token '<token as sent>'`.

    Transcript, `decode` of garbage: `string: Bad bech32 string: invalid token '"lnbcrt1..."'`.
    """
    token = json.dumps(value, ensure_ascii=False)
    return RpcFailure(INVALID_PARAMS, f"{name}: {problem}: invalid token '{token}'")
