"""Real Sovereign processes for tests: each instance has its own data directory and port."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"Timed out after {timeout} s waiting for {what}")


def _process_tree() -> dict[int, list[int]]:
    """Each process's children, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def children(pid: int) -> set[int]:
    return set(_process_tree().get(pid, []))


def descendants(pid: int) -> set[int]:
    tree = _process_tree()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


NODE_SETTINGS = ("SOVEREIGN_", "REDIS_URL", "DATABASE_URL")


def inherited_environment() -> dict[str, str]:
    """The shell's environment without its node settings: a test node never reaches the
    database, Redis or Lightning node a developer's shell names, only what the test gives."""
    return {name: value for name, value in os.environ.items() if not name.startswith(NODE_SETTINGS)}


class Instance:
    """One Sovereign node: a data directory, a port, and the processes started on them."""

    def __init__(self, data_dir: Path, **environment: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **inherited_environment(),
            "DJANGO_SETTINGS_MODULE": "sovereign.settings",  # not the tests' own settings
            "SOVEREIGN_DATA_DIR": str(data_dir),
            "SOVEREIGN_PORT": str(self.port),
            "SOVEREIGN_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **environment,
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str) -> subprocess.Popen[bytes]:
        """Start a command (by default `manage.py run ...`) with this instance's settings."""
        log = open(self.data_dir / f"process-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def run(self, *programs: str) -> subprocess.Popen[bytes]:
        return self.start(sys.executable, "manage.py", "run", *programs)

    def serve_web(self) -> None:
        """Start just the web server and wait until it answers."""
        self.run("web")
        self.wait_until("web", "up")

    def claim(self, keys: Any) -> None:
        """Make keys the owner, from the command line."""
        claimed = self.manage("claim", keys.public_key().to_bech32())
        assert claimed.returncode == 0, claimed.stderr

    def status_socket(self, cookie: str = "", origin: str = "") -> Any:
        """A websocket to the System page's live status, as a browser would open it."""
        import websockets

        return websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws/system/",
            origin=origin or self.url,
            additional_headers={"Cookie": cookie} if cookie else None,
        )

    def manage(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *argv],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                health: dict[str, Any] = json.load(response)
                return health
        except OSError:
            return None

    def component(self, name: str) -> dict[str, Any] | None:
        health = self.health()
        if health is None:
            return None
        return next(c for c in health["components"] if c["name"] == name)

    def wait_until(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            component = self.component(name)
            return component if component and component["state"] == state else None

        result: dict[str, Any] = wait_for(reached, timeout, f"{name} to be {state}")
        return result

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.data_dir.glob("*.log"))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class RedisServer:
    """A real redis-server on a free port, with nothing kept on disk."""

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise AssertionError("redis-server is not installed (.ci/run installs it).")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, 10, "redis-server to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def signed_login_header(keys: Any, url: str, challenge: str, created_at: int | None = None) -> str:
    """`Authorization: Nostr ...` for a login, as a NIP-07 extension would sign it."""
    from nostr_sdk import EventBuilder, Kind, Tag, Timestamp

    tags = [["u", url], ["method", "POST"], ["challenge", challenge]]
    builder = EventBuilder(Kind(27235), "").tags([Tag.parse(tag) for tag in tags])
    if created_at is not None:
        builder = builder.custom_created_at(Timestamp.from_secs(created_at))
    event_json = builder.finalize(keys).as_json()
    return "Nostr " + base64.b64encode(event_json.encode()).decode()


def log_in(instance: Instance, keys: Any) -> str:
    """Log in to a running node through its real NIP-07 endpoints; returns the Cookie header."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{instance.url}/login/").read()
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Referer": f"{instance.url}/login/"}
    request = urllib.request.Request(
        f"{instance.url}/auth/challenge", method="POST", headers=headers
    )
    issued = json.load(opener.open(request))
    header = signed_login_header(keys, f"{instance.url}{issued['path']}", issued["challenge"])
    request = urllib.request.Request(
        f"{instance.url}{issued['path']}",
        method="POST",
        headers={**headers, "Authorization": header},
    )
    opener.open(request).read()
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)
