"""The System page in a real Chromium, against real web and worker processes."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Locator, Page, expect

from tests.browser import install_nostr_extension
from tests.instances import Instance, children, is_running, wait_for

pytestmark = [pytest.mark.processes, pytest.mark.browser]


def worker_state(page: Page) -> Locator:
    return page.locator('tr[data-component="worker"] .state')


def test_the_system_page_shows_the_worker_going_down_without_a_reload(
    make_instance: Callable[..., Instance], page: Page
) -> None:
    node = make_instance()
    node.serve_web()
    worker = node.run("worker")
    node.wait_until("worker", "up")
    owner = Keys.generate()
    node.claim(owner)
    install_nostr_extension(page, owner)

    page.goto(f"{node.url}/system/")
    page.get_by_role("button", name="Log in with my Nostr extension").click()
    expect(page).to_have_url(f"{node.url}/system/")
    expect(page.locator("#live")).to_have_text("Live")
    expect(worker_state(page)).to_have_text("up")

    page.get_by_role("button", name="Send a test task").click()
    expect(page.locator("#probe-result")).to_have_text(re.compile(r"worker@.+ ran it in \d+ ms"))

    # Killed outright, as the out-of-memory killer would: no goodbye, no last heartbeat.
    # The worker's own processes first (their own group), then its supervisor, which would
    # otherwise restart it.
    (celery,) = children(worker.pid)
    os.killpg(celery, signal.SIGKILL)
    worker.kill()
    assert wait_for(lambda: not is_running(celery), 10, "the worker to be gone")

    expect(worker_state(page)).to_have_text("down", timeout=30_000)
    expect(page.locator('tr[data-component="web"] .state')).to_have_text("up")
