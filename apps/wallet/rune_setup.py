"""`manage.py wallet rune`: Sovereign's own rune for CLNRest, made over the node's socket.

On Umbrel lightningd's socket is root's, mode 0600, and Sovereign's long-running containers
run as uid 1000. A short-lived container that runs as root, with Core Lightning's directory
mounted read-only, runs this once at each start: it asks the node (`createrune`) for a rune
that allows exactly the methods the wallet calls (`METHODS_CALLED`), or keeps the one it made
before if the node still accepts it with those same restrictions, writes it where the wallet
reads it (owner-only) and copies CLNRest's CA certificate beside it, both owned by the user
the wallet runs as. The rune is never printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.wallet.backends import clnrest
from apps.wallet.backends.base import METHODS_CALLED, NodeMissing, NodeRefused, NodeSilent
from apps.wallet.backends.cln import call_socket

RUNE_FILE = "rune"
CA_FILE = "ca.pem"
RUNE_MODE = 0o600
CA_MODE = 0o644  # a certificate is public; the rune is the secret
QUESTION_SECONDS = 10.0
RETRY_SECONDS = 0.5
OWNER = re.compile(r"(\d+):(\d+)")


class RuneSetupError(Exception):
    """Bad input, or the node never answered: nothing was written."""


class NodeNotReady(RuneSetupError):
    """The node (or its CA certificate) did not appear in time: nothing was written."""


class BadInput(RuneSetupError):
    """An option that can never work, whatever the node does: nothing was written."""


@dataclass(frozen=True)
class RuneSetup:
    reused: bool
    unique_id: str
    rune_file: Path
    ca_file: Path | None  # None: CLNRest over plain HTTP (StartOS), no certificate to copy
    owner: tuple[int, int]


def wanted_restrictions() -> list[list[str]]:
    """One restriction whose alternatives are the wallet's methods: any one of them, no other."""
    return [[f"method={method}" for method in METHODS_CALLED]]


def owner_parse(text: str) -> tuple[int, int]:
    matched = OWNER.fullmatch(text.strip())
    if matched is None:
        raise BadInput(f"--owner {text!r} is not UID:GID (numbers, e.g. 1000:1000).")
    return int(matched.group(1)), int(matched.group(2))


def rune_setup(
    socket: Path, ca: Path | None, to: Path, owner: tuple[int, int], wait: float
) -> RuneSetup:
    """Make or keep the rune, copy the CA if any; RuneSetupError (nothing written) if not."""
    if wait < 0:
        raise BadInput("--wait cannot be negative.")
    if not to.parent.is_dir() or (to.exists() and not to.is_dir()):
        raise BadInput(f"--to {to} is not a directory; nothing was written.")
    deadline = time.monotonic() + wait
    _wait_for_node(socket, deadline, wait)
    if ca is not None:
        _wait_for_file(ca, deadline, wait)
    certificate = None if ca is None else _certificate(ca)
    _folder(to, owner)
    rune_file, ca_file = to / RUNE_FILE, to / CA_FILE
    kept = _accepted_rune_id(socket, rune_file)
    if kept is not None:
        _tighten(rune_file, RUNE_MODE, owner)
    else:
        made = _ask(socket, "createrune", restrictions=wanted_restrictions())
        _write(rune_file, (made["rune"] + "\n").encode(), RUNE_MODE, owner)
    if certificate is not None:
        _write(ca_file, certificate, CA_MODE, owner)
    unique_id = kept if kept is not None else str(made["unique_id"])
    return RuneSetup(kept is not None, unique_id, rune_file, None if ca is None else ca_file, owner)


def _wait_for_node(socket: Path, deadline: float, wait: float) -> None:
    while True:
        try:
            call_socket(socket, "getinfo", _question_seconds(deadline), {})
            return
        except NodeRefused:
            return  # it answers: that is all we wait for
        except (NodeMissing, NodeSilent):
            if time.monotonic() >= deadline:
                raise NodeNotReady(
                    f"Core Lightning did not answer on {socket} within {wait:g} s; "
                    "nothing was written."
                ) from None
            time.sleep(RETRY_SECONDS)


def _wait_for_file(path: Path, deadline: float, wait: float) -> None:
    # cln-grpc or CLNRest writes the CA a moment after lightningd opens its socket.
    while not path.is_file():
        if time.monotonic() >= deadline:
            raise NodeNotReady(
                f"CLNRest's CA certificate {path} did not appear within {wait:g} s; "
                "nothing was written."
            )
        time.sleep(RETRY_SECONDS)


def _folder(to: Path, owner: tuple[int, int]) -> None:
    """`to` itself may be new (the first start): made owner-only, for the wallet's user."""
    if not to.is_dir():
        to.mkdir(mode=0o700)
        os.chown(to, *owner)


def _certificate(path: Path) -> bytes:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise RuneSetupError(f"--ca {path} holds no PEM certificate; nothing was written.")
    return data


def _question_seconds(deadline: float) -> float:
    return max(1.0, min(QUESTION_SECONDS, deadline - time.monotonic()))


def _ask(socket: Path, method: str, **params: Any) -> dict[str, Any]:
    try:
        return call_socket(socket, method, QUESTION_SECONDS, params)
    except (NodeMissing, NodeSilent, NodeRefused) as error:
        raise RuneSetupError(f"{method} failed: {error}; nothing was written.") from None


def _accepted_rune_id(socket: Path, rune_file: Path) -> str | None:
    """The unique id of the rune already in `rune_file`, if the node still takes it as ours,
    with exactly the wanted restrictions; None if a new one is needed."""
    if not rune_file.exists():
        return None
    try:
        rune = clnrest.rune_read(str(rune_file))
        shown = call_socket(socket, "showrunes", QUESTION_SECONDS, {"rune": rune})["runes"][0]
        call_socket(socket, "checkrune", QUESTION_SECONDS, {"rune": rune, "method": "getinfo"})
    except (NodeMissing, NodeRefused, NodeSilent, IndexError, KeyError):
        return None
    ours = shown.get("stored", True) and shown.get("our_rune", True)
    if not ours or shown.get("blacklisted") or _restrictions(shown) != wanted_restrictions():
        return None
    return str(shown["unique_id"])


def _restrictions(shown: dict[str, Any]) -> list[list[str]]:
    return [
        [f"{a['fieldname']}{a['condition']}{a['value']}" for a in restriction["alternatives"]]
        for restriction in shown.get("restrictions", [])
    ]


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int]) -> None:
    """Replace `path` at once with a file that is `mode` and `owner`'s from the start."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchown(file.fileno(), *owner)
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _tighten(path: Path, mode: int, owner: tuple[int, int]) -> None:
    os.chown(path, *owner)
    os.chmod(path, mode)
