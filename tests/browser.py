"""Headless Chromium for dashboard tests, and a test NIP-07 extension backed by a real key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from nostr_sdk import EventBuilder, Keys, Kind, Tag, Timestamp
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        raise AssertionError("chromium is not installed (.ci/run installs it).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def install_nostr_extension(page: Page, keys: Keys) -> None:
    """A `window.nostr` (NIP-07) whose signEvent signs with keys, as Alby or nos2x would."""

    def sign(template_json: str) -> str:
        template = json.loads(template_json)
        builder = (
            EventBuilder(Kind(template["kind"]), template["content"])
            .tags([Tag.parse(tag) for tag in template["tags"]])
            .custom_created_at(Timestamp.from_secs(template["created_at"]))
        )
        return str(builder.finalize(keys).as_json())

    page.expose_function("testExtensionSign", sign)
    page.add_init_script(
        "window.nostr = {"
        f"  getPublicKey: async () => '{keys.public_key().to_hex()}',"
        "  signEvent: async (t) => JSON.parse(await window.testExtensionSign(JSON.stringify(t))),"
        "};"
    )
