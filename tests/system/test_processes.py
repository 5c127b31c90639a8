"""The whole product as `make run` starts it: real web server, real Celery worker, real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable

import pytest
import websockets
from nostr_sdk import Keys

from tests.instances import (
    ROOT,
    Instance,
    RedisServer,
    children,
    command_line,
    descendants,
    is_running,
    log_in,
    wait_for,
)

pytestmark = pytest.mark.processes


def owner_session(instance: Instance) -> str:
    """Claim the node for a fresh key and log in as its owner; returns the Cookie header."""
    keys = Keys.generate()
    instance.claim(keys)
    return log_in(instance, keys)


def probe_through_websocket(instance: Instance) -> dict[str, object]:
    """Run a test task from the command line while watching the System page's websocket."""
    cookie = owner_session(instance)

    async def watch() -> dict[str, object]:
        async with instance.status_socket(cookie) as socket:
            first = json.loads(await socket.recv())
            assert first["type"] == "status"
            probe = await asyncio.to_thread(instance.manage, "probe_worker")
            assert probe.returncode == 0, probe.stderr
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), timeout=20))
                if event["type"] == "probe":
                    return dict(event)

    return asyncio.run(watch())


def test_a_worker_on_the_embedded_broker_runs_a_task_end_to_end(
    make_instance: Callable[..., Instance],
) -> None:
    node = make_instance()
    node.run()
    node.wait_until("worker", "up")
    assert "Embedded" in node.wait_until("broker", "up")["detail"]
    # First start of an unclaimed node: the setup secret is printed, and kept owner-only.
    secret = (node.data_dir / "setup_secret").read_text()
    wait_for(lambda: f"setup secret: {secret}" in node.logs(), 10, "the setup secret")
    # ... and the bundled model is in the catalog, ready to answer.
    assert node.manage("models", "list").stdout.startswith("smollm2-135m-instruct\tllama")

    event = probe_through_websocket(node)

    assert str(event["worker"]).startswith("worker@")
    assert isinstance(event["round_trip_ms"], int)
    assert not (node.data_dir / "redis").exists()


def test_a_worker_on_redis_runs_a_task_end_to_end(
    make_instance: Callable[..., Instance], redis_server: RedisServer
) -> None:
    node = make_instance(REDIS_URL=redis_server.url)
    node.run()
    node.wait_until("worker", "up")
    assert f":{redis_server.port}" in node.wait_until("broker", "up")["detail"]

    event = probe_through_websocket(node)

    assert str(event["worker"]).startswith("worker@")
    # Nothing went through the embedded broker folder.
    assert not list((node.data_dir / "broker").glob("*.msg"))


def test_the_status_socket_refuses_another_origin_and_strangers(
    make_instance: Callable[..., Instance],
) -> None:
    node = make_instance()
    node.serve_web()
    cookie = owner_session(node)

    async def connect(cookie: str, origin: str = "") -> None:
        async with node.status_socket(cookie, origin) as socket:
            await socket.recv()

    asyncio.run(connect(cookie))
    with pytest.raises(websockets.InvalidStatus, match="403"):
        asyncio.run(connect(cookie, origin="http://evil.example"))
    with pytest.raises(websockets.InvalidStatus, match="403"):
        asyncio.run(connect(""))


def test_the_broker_shows_down_when_redis_is_unreachable(
    make_instance: Callable[..., Instance],
) -> None:
    node = make_instance(REDIS_URL="redis://127.0.0.1:9/0")
    node.run("web")
    broker = node.wait_until("broker", "down")
    assert "127.0.0.1:9" in broker["detail"]


def test_a_crashed_worker_is_restarted(make_instance: Callable[..., Instance]) -> None:
    node = make_instance()
    supervisor = node.run()
    node.wait_until("worker", "up")
    # The worker's main process, the supervisor's own child (not one of its pool processes).
    worker = next(pid for pid in children(supervisor.pid) if b"celery" in command_line(pid))

    os.kill(worker, signal.SIGKILL)

    def restarted() -> int | None:
        workers = [p for p in children(supervisor.pid) if b"celery" in command_line(p)]
        return next((p for p in workers if p != worker and is_running(p)), None)

    wait_for(restarted, 30, "a new worker process")
    probe = node.manage("probe_worker", "--timeout", "30")
    assert probe.returncode == 0, probe.stderr + node.logs()


def test_sigterm_to_make_run_stops_every_process(make_instance: Callable[..., Instance]) -> None:
    node = make_instance()
    make = node.start("make", "--no-print-directory", "run")
    node.wait_until("worker", "up", timeout=300)
    started = descendants(make.pid)
    assert any(b"uvicorn" in command_line(pid) for pid in started)
    assert any(b"celery" in command_line(pid) for pid in started)

    make.send_signal(signal.SIGTERM)

    wait_for(lambda: not any(is_running(pid) for pid in started), 30, "every process to stop")
    assert node.health() is None


def test_a_port_in_use_stops_the_start_with_a_clear_message(
    make_instance: Callable[..., Instance],
) -> None:
    first = make_instance()
    first.serve_web()
    second = make_instance(SOVEREIGN_PORT=str(first.port))

    result = second.manage("run")

    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{first.port}" in result.stderr
    assert "SOVEREIGN_PORT" in result.stderr


def test_the_readme_gives_the_two_commands_first() -> None:
    readme = (ROOT / "README.md").read_text()
    first_commands = [line for line in readme.splitlines() if line.startswith("make ")][:2]
    assert first_commands == ["make run", "make test"]
    assert subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True).returncode == 0
