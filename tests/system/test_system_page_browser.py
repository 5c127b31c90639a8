"""The System page in a real Chromium, against real web and worker processes."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.instances import Instance

pytestmark = [pytest.mark.processes, pytest.mark.browser]

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        raise AssertionError("chromium is not installed (.ci/run installs it).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def worker_state(page: Page) -> object:
    return page.locator('tr[data-component="worker"] .state')


def test_the_system_page_shows_the_worker_going_down_without_a_reload(
    make_instance: Callable[..., Instance], page: Page
) -> None:
    node = make_instance()
    node.run("web")
    node.wait_until("web", "up")
    worker = node.run("worker")
    node.wait_until("worker", "up")

    page.goto(f"{node.url}/system/")
    expect(page.locator("#live")).to_have_text("Live")
    expect(worker_state(page)).to_have_text("up")  # type: ignore[arg-type]

    page.get_by_role("button", name="Send a test task").click()
    expect(page.locator("#probe-result")).to_have_text(re.compile(r"worker@.+ ran it in \d+ ms"))

    worker.terminate()  # what Ctrl-C on `manage.py run worker` does

    expect(worker_state(page)).to_have_text("down", timeout=30_000)  # type: ignore[arg-type]
    expect(page.locator('tr[data-component="web"] .state')).to_have_text("up")
