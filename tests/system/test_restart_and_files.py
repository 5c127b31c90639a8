"""What a restart and a stranger's curiosity find: a free port, quiet logs, owner-only files."""

from __future__ import annotations

import signal
import socket
import stat
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from nostr_sdk import Keys

from tests.instances import Instance, log_in

pytestmark = pytest.mark.processes

TIME_WAIT = "06"  # the state's number in /proc/net/tcp


def connections_waiting(port: int) -> int:
    """Sockets on this local port in TIME_WAIT, read from the kernel's table."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local_ports = [(row.split()[1].split(":")[1], row.split()[3]) for row in rows]
    return sum(
        1 for hex_port, state in local_ports if int(hex_port, 16) == port and state == TIME_WAIT
    )


def test_the_web_server_starts_again_right_after_a_stop_with_a_client_connected(
    make_instance: Callable[..., Instance],
) -> None:
    node = make_instance()
    node.serve_web()
    client = socket.create_connection(("127.0.0.1", node.port))
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert client.recv(4096).startswith(b"HTTP/1.1 200")  # kept alive, still open
    first = node.processes[-1]

    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    client.close()
    assert connections_waiting(node.port) > 0  # the server closed first: TIME_WAIT
    again = node.run("web")

    node.wait_until("web", "up", timeout=60)
    assert again.poll() is None
    assert "Cannot listen" not in node.logs()


def fetch_status(url: str, cookie: str) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_refused_page_leaves_no_line_in_the_log(make_instance: Callable[..., Instance]) -> None:
    node = make_instance()
    node.serve_web()
    node.claim(Keys.generate())
    member = Keys.generate()
    assert node.manage("member", "add", member.public_key().to_bech32()).returncode == 0
    cookie = log_in(node, member)

    assert fetch_status(f"{node.url}/people/?probe=forbidden-page", cookie) == 403
    assert fetch_status(f"{node.url}/no-such-page-here", cookie) == 404

    logs = node.logs()
    assert "forbidden-page" not in logs
    assert "/people/" not in logs
    assert "no-such-page-here" not in logs
    assert "Traceback" not in logs


def modes_in(directory: Path) -> dict[str, int]:
    return {
        str(path.relative_to(directory)): stat.S_IMODE(path.lstat().st_mode)
        for path in [directory, *directory.rglob("*")]
        if not path.is_symlink()
    }


def test_an_existing_data_directory_is_made_owner_only_at_start(
    make_instance: Callable[..., Instance],
) -> None:
    node = make_instance()
    node.data_dir.chmod(0o755)
    (node.data_dir / "old-notes.txt").write_text("from an older version")
    (node.data_dir / "old-notes.txt").chmod(0o644)
    (node.data_dir / "models").mkdir(mode=0o755)
    node.serve_web()
    owner = Keys.generate()
    node.claim(owner)
    log_in(node, owner)

    modes = modes_in(node.data_dir)

    assert "sovereign.sqlite3" in modes
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert loose == {}
    assert modes["."] == 0o700
    assert modes["old-notes.txt"] == 0o600


def test_the_database_overwrites_what_is_deleted(db: None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA secure_delete")
        assert cursor.fetchone()[0] == 1


def test_a_manage_command_creates_owner_only_files(tmp_path: Path) -> None:
    node = Instance(tmp_path)
    result = node.manage("migrate", "--verbosity", "0")

    assert result.returncode == 0, result.stderr
    assert {name: oct(mode) for name, mode in modes_in(tmp_path).items() if mode & 0o077} == {}
