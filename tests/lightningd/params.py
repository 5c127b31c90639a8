"""Command parameters read the way lightningd's `param()` reads them (`common/json_param.c`).

Parameters come by name (an object) or by position (an array); `null` means "not given".
The messages are lightningd's, so a caller that sends something wrong sees the real answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.lightningd.errors import INVALID_PARAMS, RpcFailure, bad_param
from tests.lightningd.invoices import canonical

Parser = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Param:
    name: str
    parse: Parser
    required: bool = False
    default: Any = None


def required(name: str, parse: Parser) -> Param:
    return Param(name, parse, required=True)


def optional(name: str, parse: Parser, default: Any = None) -> Param:
    return Param(name, parse, default=default)


def parse_params(spec: Sequence[Param], params: Any, allow_extra: bool = False) -> dict[str, Any]:
    """Named values for `spec`, or the failure lightningd answers."""
    given: dict[str, Any]
    if isinstance(params, list):
        given = _by_position(spec, params, allow_extra)
    elif isinstance(params, dict):
        given = _by_name(spec, params, allow_extra)
    else:
        raise RpcFailure(INVALID_PARAMS, "Expected array or object for params")
    for param in spec:
        if param.required and param.name not in given:
            raise RpcFailure(INVALID_PARAMS, f"missing required parameter: {param.name}")
    return {
        param.name: param.parse(param.name, given[param.name])
        if param.name in given
        else param.default
        for param in spec
    }


def _by_position(spec: Sequence[Param], values: list[Any], allow_extra: bool) -> dict[str, Any]:
    if len(values) > len(spec) and not allow_extra:
        raise RpcFailure(
            INVALID_PARAMS, f"too many parameters: got {len(values)}, expected {len(spec)}"
        )
    return {
        param.name: value for param, value in zip(spec, values, strict=False) if value is not None
    }


def _by_name(spec: Sequence[Param], values: dict[str, Any], allow_extra: bool) -> dict[str, Any]:
    known = {param.name for param in spec}
    for name in values:
        if name not in known and not allow_extra:
            raise RpcFailure(
                INVALID_PARAMS,
                f"unknown parameter: {name}, this may be caused by a failure to autodetect"
                " key=value-style parameters. Please try using the -k flag and explicit"
                " key=value pairs of parameters.",
            )
    return {name: value for name, value in values.items() if value is not None and name in known}


def string(name: str, value: Any) -> str:
    """`param_string`: the token's text, whatever JSON type it had."""
    return value if isinstance(value, str) else _token_text(value)


def escaped_string(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    raise bad_param(name, "should be a string (without \\u)", value)


def label(name: str, value: Any) -> str:
    """`param_label`: a string or a number literal."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _token_text(value)
    raise bad_param(name, "should be a string or number", value)


def invstring(name: str, value: Any) -> str:
    """`param_invstring`: canonical form (no `lightning:`, lower case)."""
    return canonical(string(name, value))


def u32(name: str, value: Any) -> int:
    return _unsigned(name, value, 32, "should be an unsigned 32 bit integer")


def u64(name: str, value: Any) -> int:
    return _unsigned(name, value, 64, "should be an unsigned 64 bit integer")


def number(name: str, value: Any) -> int:
    return _unsigned(name, value, 32, "should be an integer")


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise bad_param(name, "should be 'true' or 'false'", value)


def non_negative_number(name: str, value: Any) -> float:
    """`param_millionths`, as `pay`'s `maxfeepercent` reads it."""
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value):
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise bad_param(name, "should be a non-negative floating-point number", value)


def sha256(name: str, value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    raise bad_param(name, "should be a 32 byte hex value", value)


def preimage(name: str, value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    raise bad_param(name, "should be 64 hex digits", value)


def node_id(name: str, value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"0[23][0-9a-fA-F]{64}", value):
        return value.lower()
    raise bad_param(name, "should be a node id", value)


def msat(name: str, value: Any) -> int:
    amount = parse_amount_msat(value)
    if amount is None:
        raise bad_param(name, "should be a millisatoshi amount", value)
    return amount


def positive_msat_or_any(name: str, value: Any) -> int | None:
    """`invoice`'s amount: `"any"` (None here) or more than zero msat."""
    if value == "any":
        return None
    amount = parse_amount_msat(value)
    if not amount:
        raise bad_param(name, "should be positive msat or 'any'", value)
    return amount


def anything(name: str, value: Any) -> Any:
    return value


def parse_amount_msat(value: Any) -> int | None:
    """CLN's `parse_amount_msat`: 123, "123", "123msat", "123sat", "0.001btc"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d+)(msat|sat)?|(\d+)\.(\d{1,11})btc", value)
    if match is None:
        return None
    if match.group(3) is not None:
        return int(match.group(3)) * 10**11 + int(match.group(4).ljust(11, "0"))
    return int(match.group(1)) * (1000 if match.group(2) == "sat" else 1)


def _unsigned(name: str, value: Any, bits: int, problem: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**bits:
        return value
    raise bad_param(name, problem, value)


def _token_text(value: Any) -> str:
    return json.dumps(value)
