"""`createrune`, `showrunes` and `checkrune`, as Core Lightning v26.06 answers them.

Runes are the `runes` package's (Rusty Russell's Python implementation, the same
construction as ccan/rune in lightningd): a master rune from a secret of the node's, and
every rune `createrune` makes starts with its unique id (`=0`, `=1`, …) and carries the
restrictions asked for. What CLN adds is followed from `lightningd/runes.c` and
`ccan/ccan/rune/rune.c`: the wording of refusals ("Not permitted: method is not equal to
getinfo AND method is not equal to xpay"), the error codes (1501 not ours, 1502 not
permitted, 1503 blacklisted), the fields checked (`method`, `pnum`, `pname<name>`,
`parr<n>`, `id`, `time`) and showrunes' English. `rate`, `per` and `pinv` conditions are not
modelled: a rune using them fails its check with CLN's "not present" wording.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from string import punctuation
from typing import Any

import runes

from tests.lightningd.errors import RpcFailure, bad_param
from tests.lightningd.node import Command, Node, Request
from tests.lightningd.params import anything, node_id, optional, required, string

RUNE_NOT_AUTHORIZED = 1501
RUNE_NOT_PERMITTED = 1502
RUNE_BLACKLISTED = 1503
CONDITIONS = "!=/^$~<>{}#"
UNRESTRICTED_WARNING = (
    "WARNING: This rune has no restrictions! Anyone who has access to this rune could drain "
    "funds from your node. Be careful when giving this to apps that you don't trust. Consider "
    "using the restrictions parameter to only allow access to specific rpc methods."
)
ENGLISH = {
    "!": "is missing",
    "=": "equal to",
    "/": "unequal to",
    "^": "starts with",
    "$": "ends with",
    "~": "contains",
    "<": "<",
    ">": ">",
    "{": "sorts before",
    "}": "sorts after",
}
COMPLAINTS: dict[str, tuple[str, Callable[[str, str], bool]]] = {
    "=": ("is not equal to", lambda field, value: field == value),
    "/": ("is equal to", lambda field, value: field != value),
    "^": ("does not start with", lambda field, value: field.startswith(value)),
    "$": ("does not end with", lambda field, value: field.endswith(value)),
    "~": ("does not contain", lambda field, value: value in field),
    "{": ("is equal to or ordered after", lambda field, value: field < value),
    "}": ("is equal to or ordered before", lambda field, value: field > value),
}


def master(node: Node) -> runes.MasterRune:
    # lightningd derives it from the hsm secret with the key "commando"; any secret of the
    # node's own, kept with it, behaves the same.
    secret = hmac.new(node.secret, b"commando", hashlib.sha256).digest()
    return runes.MasterRune(secret)


def createrune(node: Node, request: Request) -> dict[str, Any]:
    restrictions = _restrictions(request.args["restrictions"])
    given = request.args["rune"]
    with node.lock:
        if given is not None:
            rune = _parsed(given)
        else:
            unique_id = len(node.state.runes)
            rune = master(node).copy()
            rune.add_restriction(runes.Restriction.unique_id(unique_id))
        for restriction in restrictions:
            rune.add_restriction(restriction)
        made = rune.to_base64()
        if given is None:
            node.state.runes.append(made)
            node.save()
    answer = {"rune": made, "unique_id": _unique_id(rune)}
    if len(rune.restrictions) <= 1:
        answer["warning_unrestricted_rune"] = UNRESTRICTED_WARNING
    return answer


def showrunes(node: Node, request: Request) -> dict[str, Any]:
    given = request.args["rune"]
    with node.lock:
        if given is None:
            return {"runes": [_shown(node, text, stored=True) for text in node.state.runes]}
        _parsed(given)
        stored = _stored(node, given) == given
        return {"runes": [_shown(node, given, stored=stored)]}


def checkrune(node: Node, request: Request) -> dict[str, Any]:
    args = request.args
    rune_check(node, args["rune"], args["method"], args["params"], args["nodeid"])
    return {"valid": True}


def rune_check(
    node: Node,
    text: str,
    method: str | None,
    params: Any = None,
    peer: str | None = None,
) -> None:
    """Raise CLN's checkrune failure if `text` does not allow `method` with `params`."""
    rune = _parsed(text)
    if not master(node).is_rune_authorized(rune):
        raise RpcFailure(RUNE_NOT_AUTHORIZED, "Not authorized: Not derived from master")
    values = _values(method, params, peer)
    for index, restriction in enumerate(rune.restrictions):
        if index == 0 and restriction.alternatives[0].is_unique_id():
            continue
        failures = [_test(alternative, values) for alternative in restriction.alternatives]
        if all(failure is not None for failure in failures):
            raise RpcFailure(RUNE_NOT_PERMITTED, "Not permitted: " + _english_failure(failures))


def _english_failure(failures: list[str | None]) -> str:
    text = " AND ".join(str(failure) for failure in failures)
    for prefix, english in (("pname", "parameter "), ("parr", "parameter #")):
        if text.startswith(prefix):
            return english + text[len(prefix) :]
    if text.startswith("pnum"):
        return "number of parameters" + text[len("pnum") :]
    return text


def _values(method: str | None, params: Any, peer: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {"time": int(time.time())}
    if method is not None:
        values["method"] = method
    if peer is not None:
        values["id"] = peer
    values["pnum"] = len(params) if isinstance(params, (dict, list)) else 0
    if isinstance(params, dict):
        for name, value in params.items():
            values["pname" + name] = value
            values["pname" + "".join(c for c in name if c not in punctuation)] = value
    elif isinstance(params, list):
        for index, value in enumerate(params):
            values[f"parr{index}"] = value
    return values


def _test(alternative: runes.Alternative, values: dict[str, Any]) -> str | None:
    """ccan/rune's `rune_alt_single`, with its wording."""
    field, condition, wanted = alternative.field, alternative.cond, alternative.value
    if condition == "#":
        return None
    if field not in values:
        return None if condition == "!" else f"{field} not present"
    if condition == "!":
        return f"{field} is present"
    value = values[field]
    if condition in "<>":
        return _integer_test(field, condition, wanted, value)
    text = value if isinstance(value, str) else _json_text(value)
    complaint, holds = COMPLAINTS[condition]
    return None if holds(text, wanted) else f"{field} {complaint} {wanted}"


def _integer_test(field: str, condition: str, wanted: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{field} is not an integer field"
    try:
        limit = int(wanted)
    except ValueError:
        return f"{wanted} is not a valid integer"
    if condition == "<":
        return None if value < limit else f"{field} is greater or equal to {wanted}"
    return None if value > limit else f"{field} is less or equal to {wanted}"


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _restrictions(given: Any) -> list[runes.Restriction]:
    """createrune's `restrictions`: "readonly", or an array of arrays of alternatives."""
    if given is None:
        return []
    if given == "readonly":
        return [
            runes.Restriction.from_str("method^list|method^get|method=summary"),
            runes.Restriction.from_str("method/listdatastore"),
        ]
    if not isinstance(given, list):
        given = [given]
    made = []
    for restriction in given:
        parsed = [_alternative(a) for a in restriction] if isinstance(restriction, list) else []
        alternatives = [a for a in parsed if a is not None]
        if not alternatives or len(alternatives) != len(parsed):
            problem = "not a valid restriction (should be array)"
            raise bad_param("restrictions", problem, restriction)
        made.append(runes.Restriction(alternatives))
    return made


def _alternative(text: Any) -> runes.Alternative | None:
    if not isinstance(text, str):
        return None
    length = next((i for i, c in enumerate(text) if c in punctuation and c != "_"), len(text))
    if length == 0 or length == len(text) or text[length] not in CONDITIONS:
        return None
    return runes.Alternative(text[:length], text[length], text[length + 1 :])


def _parsed(text: Any) -> runes.Rune:
    """param_rune: a base64 rune whose unique id is a number, or CLN's -32602."""
    try:
        rune = runes.Rune.from_base64(str(text))
        base64.urlsafe_b64decode(str(text))
    except (ValueError, UnicodeDecodeError, IndexError):
        raise bad_param("rune", "should be base64 string", text) from None
    if not _unique_id(rune).isdigit():
        raise bad_param("rune", "should have valid numeric unique_id", text)
    return rune


def _unique_id(rune: runes.Rune) -> str:
    first = rune.restrictions[0].alternatives[0] if rune.restrictions else None
    return first.value.split("-")[0] if first is not None and first.is_unique_id() else ""


def _stored(node: Node, text: str) -> str | None:
    unique_id = int(_unique_id(_parsed(text)))
    return node.state.runes[unique_id] if unique_id < len(node.state.runes) else None


def _shown(node: Node, text: str, stored: bool) -> dict[str, Any]:
    """One `showrunes` entry, fields in `json_add_rune`'s order."""
    rune = _parsed(text)
    entry: dict[str, Any] = {"rune": text}
    if not stored:
        entry["stored"] = False
    if not master(node).is_rune_authorized(rune):
        entry["our_rune"] = False
    entry["unique_id"] = _unique_id(rune)
    shown, english = [], []
    for index, restriction in enumerate(rune.restrictions):
        if index == 0 and restriction.alternatives[0].is_unique_id():
            continue
        alternatives = [_alternative_shown(a) for a in restriction.alternatives]
        said = " OR ".join(a["english"] for a in alternatives)
        shown.append({"alternatives": alternatives, "english": said})
        english.append(said)
    entry["restrictions"] = shown
    entry["restrictions_as_english"] = " AND ".join(english)
    return entry


def _alternative_shown(alternative: runes.Alternative) -> dict[str, str]:
    field, condition, value = alternative.field, alternative.cond, alternative.value
    if condition == "!":
        english = f"{field} is missing"
    elif condition == "#":
        english = f"comment: {field} {value}"
    else:
        english = f"{field} {ENGLISH[condition]} {value}"
    return {"fieldname": field, "value": value, "condition": condition, "english": english}


def _params_object_or_array(name: str, value: Any) -> Any:
    if not isinstance(value, (dict, list)):
        raise bad_param(name, "must be object or array", value)
    return value


def _rune_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_param(name, "should be base64 string", value)
    return value


COMMANDS = {
    "createrune": Command(
        [optional("rune", _rune_text), optional("restrictions", anything)], createrune
    ),
    "showrunes": Command([optional("rune", _rune_text)], showrunes),
    "checkrune": Command(
        [
            required("rune", _rune_text),
            optional("nodeid", node_id),
            optional("method", string),
            optional("params", _params_object_or_array),
        ],
        checkrune,
    ),
}
