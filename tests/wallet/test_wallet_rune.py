"""`manage.py wallet rune`: a rune for exactly the wallet's methods, kept while the node takes
it, written owner-only for the wallet's user with CLNRest's CA beside it; bad input changes
nothing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.wallet.backends import clnrest
from apps.wallet.backends.base import METHODS_CALLED, RuneRefused
from tests.lightningd import LightningdDouble

OWNER = f"{os.getuid()}:{os.getgid()}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LightningdDouble]:
    with LightningdDouble(tmp_path / "cln", alias="household", rest=True) as household:
        yield household


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "sovereign"
    folder.mkdir()
    return folder


def wallet_rune(
    node: LightningdDouble, to: Path, *extra: str, stderr: StringIO | None = None
) -> str:
    out = StringIO()
    owner = [] if "--owner" in extra else ["--owner", OWNER]
    call_command(
        "wallet", "rune", "--socket", str(node.rpc_file), "--ca", str(node.ca_file),
        "--to", str(to), *owner, *extra, stdout=out, stderr=stderr or StringIO(),
    )  # fmt: skip
    return out.getvalue()


def rest(node: LightningdDouble, to: Path) -> clnrest.RestNode:
    """The wallet's view: CLNRest with the files the command wrote."""
    rune = clnrest.rune_read(str(to / "rune"))
    return clnrest.RestNode(node.rest_url, rune, str(to / "ca.pem"))


def test_it_makes_a_rune_for_exactly_the_wallets_methods(
    node: LightningdDouble, data: Path
) -> None:
    said = wallet_rune(node, data)
    wallet = rest(node, data)

    assert "Made a new rune (unique id 0)" in said and wallet.rune not in said
    assert clnrest.call(wallet, "getinfo", 5.0, {})["id"] == node.node_id
    for method in ("withdraw", "createrune", "showrunes", "listfunds"):
        with pytest.raises(RuneRefused, match="Not permitted: method is not equal to decode"):
            clnrest.call(wallet, method, 5.0, {})
    [shown] = node.rpc.call("showrunes", {"rune": wallet.rune})["runes"]
    assert shown["restrictions_as_english"] == " OR ".join(
        f"method equal to {method}" for method in METHODS_CALLED
    )


def test_it_writes_the_rune_owner_only_and_the_ca_beside_it(
    node: LightningdDouble, data: Path
) -> None:
    wallet_rune(node, data)

    rune, ca = (data / "rune").stat(), (data / "ca.pem").stat()
    assert stat.S_IMODE(rune.st_mode) == 0o600 and stat.S_IMODE(ca.st_mode) == 0o644
    assert (rune.st_uid, rune.st_gid) == (os.getuid(), os.getgid())
    assert (ca.st_uid, ca.st_gid) == (os.getuid(), os.getgid())
    assert (data / "ca.pem").read_bytes() == node.ca_file.read_bytes()
    assert sorted(p.name for p in data.iterdir()) == ["ca.pem", "rune"]  # no temporary left


def test_a_second_run_keeps_the_rune_the_node_still_takes(
    node: LightningdDouble, data: Path
) -> None:
    wallet_rune(node, data)
    first = (data / "rune").read_text()
    (data / "rune").chmod(0o644)

    said = wallet_rune(node, data)

    assert "Kept the rune (unique id 0)" in said
    assert (data / "rune").read_text() == first
    assert stat.S_IMODE((data / "rune").stat().st_mode) == 0o600
    assert len(node.rpc.call("showrunes", {})["runes"]) == 1


@pytest.mark.parametrize(
    "restrictions",
    [[["method=getinfo"]], [["method=getinfo", "method=withdraw"]], []],
    ids=["fewer methods", "another method", "unrestricted"],
)
def test_a_rune_with_other_rights_is_replaced(
    node: LightningdDouble, data: Path, restrictions: list[list[str]]
) -> None:
    other = node.rpc.call("createrune", {"restrictions": restrictions})["rune"]
    (data / "rune").write_text(other)

    said = wallet_rune(node, data)

    assert "Made a new rune (unique id 1)" in said
    assert (data / "rune").read_text().strip() != other


def test_a_rune_from_another_node_is_replaced(
    node: LightningdDouble, data: Path, tmp_path: Path
) -> None:
    with LightningdDouble(tmp_path / "other", alias="other") as other:
        foreign = other.rpc.call("createrune", {"restrictions": [["method=getinfo"]]})["rune"]
    (data / "rune").write_text(foreign)

    assert "Made a new rune (unique id 0)" in wallet_rune(node, data)


def test_it_fails_clearly_when_the_socket_never_answers(tmp_path: Path, data: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")

    with pytest.raises(CommandError, match=r"did not answer on .*lightning-rpc within 0.3 s"):
        call_command(
            "wallet", "rune", "--socket", str(tmp_path / "absent" / "lightning-rpc"),
            "--ca", str(ca), "--to", str(data), "--owner", OWNER, "--wait", "0.3",
        )  # fmt: skip

    assert list(data.iterdir()) == []


def test_optional_a_silent_node_starts_sovereign_without_a_rune(tmp_path: Path, data: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    err = StringIO()

    call_command(
        "wallet", "rune", "--socket", str(tmp_path / "absent" / "lightning-rpc"), "--ca", str(ca),
        "--to", str(data), "--owner", OWNER, "--wait", "0.3", "--optional", stderr=err,
    )  # fmt: skip

    assert "did not answer" in err.getvalue()
    assert "the wallet shows the node off" in err.getvalue()
    assert list(data.iterdir()) == []


def test_optional_a_node_that_breaks_off_changes_nothing_and_starts_sovereign(
    node: LightningdDouble, data: Path
) -> None:
    node.faults.next_call("createrune", "drop")
    err = StringIO()

    wallet_rune(node, data, "--optional", stderr=err)

    assert "createrune failed" in err.getvalue()
    assert "the wallet shows the node off" in err.getvalue()
    assert sorted(p.name for p in data.iterdir()) == []


def test_without_a_ca_plain_http_clnrest_gets_the_rune_alone(
    node: LightningdDouble, data: Path
) -> None:
    out = StringIO()
    call_command(
        "wallet", "rune", "--socket", str(node.rpc_file), "--to", str(data), "--owner", OWNER,
        stdout=out,
    )  # fmt: skip

    assert sorted(p.name for p in data.iterdir()) == ["rune"]
    assert "CA" not in out.getvalue()


@pytest.mark.skipif(os.getuid() != 0, reason="handing files to another user needs root")
def test_as_root_it_hands_the_rune_to_the_wallets_user(node: LightningdDouble, data: Path) -> None:
    os.chown(data, 1000, 1000)  # the data folder is the wallet user's, as on Umbrel

    wallet_rune(node, data / "lightning", "--owner", "1000:1000")

    for path in (data / "lightning", data / "lightning" / "rune", data / "lightning" / "ca.pem"):
        assert (path.stat().st_uid, path.stat().st_gid) == (1000, 1000), path.name


def test_on_the_first_start_it_makes_the_folder_owner_only(
    node: LightningdDouble, data: Path
) -> None:
    wallet_rune(node, data / "lightning")

    assert stat.S_IMODE((data / "lightning").stat().st_mode) == 0o700
    assert sorted(p.name for p in (data / "lightning").iterdir()) == ["ca.pem", "rune"]


def test_it_waits_for_the_ca_and_fails_clearly_without_it(
    node: LightningdDouble, data: Path, tmp_path: Path
) -> None:
    with pytest.raises(CommandError, match="did not appear within 0.3 s; nothing was written"):
        call_command(
            "wallet", "rune", "--socket", str(node.rpc_file), "--ca", str(tmp_path / "no.pem"),
            "--to", str(data), "--owner", OWNER, "--wait", "0.3",
        )  # fmt: skip

    assert list(data.iterdir()) == []
    assert node.rpc.call("showrunes", {})["runes"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--owner": "sovereign"}, "--owner 'sovereign' is not UID:GID"),
        ({"--to": "missing"}, "is not a directory; nothing was written"),
        ({"--wait": "-1"}, "--wait cannot be negative"),
    ],
)
def test_bad_input_is_named_and_changes_nothing(
    node: LightningdDouble, data: Path, change: dict[str, str], message: str
) -> None:
    options = {"--owner": OWNER, "--to": str(data), "--wait": "5", **change}
    if change.get("--to") == "missing":
        options["--to"] = str(data / "missing" / "deeper")
    arguments = [item for pair in options.items() for item in pair]

    with pytest.raises(CommandError, match=message):
        call_command(
            "wallet", "rune", "--socket", str(node.rpc_file), "--ca", str(node.ca_file),
            *arguments,
        )  # fmt: skip

    assert list(data.iterdir()) == []
    assert node.rpc.call("showrunes", {})["runes"] == []
