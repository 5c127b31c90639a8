"""The privacy issue's "Done when", as one test, in Chromium against a real node:

A member sends a prompt with their name, e-mail, IBAN, phone number and street to an outside
model; the provider receives only placeholders; the member sees the answer with their real
values, streamed (never a placeholder, not even for a moment); a seed phrase is stopped with a
clear message; the owner sees the redacted text on the Privacy page.

The node is a real web process in its own data directory; the outside model is the
OpenAI-shaped double on loopback (the home-network kind, redacted as every provider is unless
the owner trusts it), streaming its answer in small, slow chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, Page, expect

from tests.browser import install_nostr_extension
from tests.instances import Instance
from tests.privacy.household import NAME, PRIVATE, PROMPT, REDACTED, leaked
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = [pytest.mark.processes, pytest.mark.browser]
MODEL = "lan/strong-1"
SEED = "legal winner thank year wave sausage worth useful legal winner thank yellow"  # BIP-39
# Every text the answer showed while it streamed, as the member saw it.
WATCH_STREAMING = """() => {
  window.shown = [];
  new MutationObserver(() => {
    const streaming = document.querySelector("#transcript .answer .streaming");
    if (streaming) window.shown.push(streaming.textContent);
  }).observe(document.getElementById("transcript"),
             { subtree: true, childList: true, characterData: true });
}"""


def shell(node: Instance, code: str) -> None:
    script = (
        "from apps.identity.models import Member\n"
        "from apps.identity.services import parse_pubkey\n"
        "from apps.providers import services\n"
        f"{code}\n"
    )
    result = node.manage("shell", "-c", script)
    assert result.returncode == 0, result.stderr


def logged_in(browser: Browser, node: Instance, keys: Keys) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    install_nostr_extension(page, keys)
    page.goto(f"{node.url}/login/")
    page.get_by_role("button", name="Log in with my Nostr extension").click()
    page.wait_for_url(lambda url: "/login" not in url)
    return page


@pytest.fixture
def household(tmp_path: Path) -> Iterator[tuple[Instance, OpenAIShapedDouble, Keys, Keys]]:
    """A node with its owner and a member known by name, and an outside provider."""
    owner, member = Keys.generate(), Keys.generate()
    (tmp_path / "node").mkdir()
    with OpenAIShapedDouble() as provider:
        provider.name = "lan"
        node = Instance(tmp_path / "node", SOVEREIGN_LOG_LEVEL="DEBUG")
        try:
            node.serve_web()
            node.claim(owner)
            npub = member.public_key().to_bech32()
            assert node.manage("member", "add", npub).returncode == 0
            shell(
                node,
                f"Member.objects.filter(pubkey=parse_pubkey({npub!r})).update(name={NAME!r})\n"
                f"services.provider_add({provider.url!r}, kind='openai', name='lan')",
            )
            yield node, provider, owner, member
        finally:
            node.stop()


def test_done_when(
    household: tuple[Instance, OpenAIShapedDouble, Keys, Keys], browser: Browser
) -> None:
    node, provider, owner, member = household
    provider.switches.update(chunk_size=6, chunk_seconds=0.03)
    page = logged_in(browser, node, member)
    page.goto(f"{node.url}/chat/")
    page.locator("select[name=model]").select_option(MODEL)
    page.evaluate(WATCH_STREAMING)

    page.get_by_label("Question").fill(PROMPT)
    page.get_by_label("Question").press("Enter")

    # Before anything leaves, the member sees exactly what will: placeholders only.
    preview = page.get_by_role("dialog", name="What will leave this node")
    expect(preview).to_contain_text(REDACTED)
    assert not any(value in preview.inner_text() for value in PRIVATE)
    assert provider.requests == []
    preview.get_by_role("button", name="Send").click()

    # The member sees the answer with their real values, streamed.
    answer = page.locator("#transcript .answer").last
    expect(answer.locator(".markdown")).to_have_text(f"lan answers: {PROMPT}", timeout=20_000)
    shown: list[str] = page.evaluate("window.shown")
    partial = [text for text in dict.fromkeys(shown) if text]
    assert len(partial) >= 5, partial  # it grew piece by piece
    assert all(f"lan answers: {PROMPT}".startswith(text) for text in partial)
    assert not any("[" in text for text in partial)  # no placeholder, not even for a moment
    # The provider received only placeholders.
    [received] = provider.requests
    assert received["messages"] == [{"role": "user", "content": REDACTED}]
    assert leaked(received) == []

    # A seed phrase is stopped with a clear message.
    page.get_by_label("Question").fill(f"My wallet words are {SEED}, keep them for me.")
    page.get_by_label("Question").press("Enter")
    stopped = page.get_by_role("dialog", name="What will leave this node")
    expect(stopped).to_contain_text(
        "Not sent: the message contains a wallet seed phrase (BIP-39 words). "
        "Remove it and send again."
    )
    expect(stopped.get_by_role("button", name="Send")).to_be_hidden()  # only Cancel
    assert "legal winner" not in stopped.inner_text()
    stopped.get_by_role("button", name="Cancel").click()
    assert len(provider.requests) == 1

    # The owner sees the redacted text on the Privacy page.
    owner_page = logged_in(browser, node, owner)
    owner_page.goto(f"{node.url}/privacy/egress/")
    record = owner_page.locator(".egress-record")
    expect(record).to_have_count(1)
    record.locator("summary").click()
    sent = record.locator("pre").inner_text()
    assert json.dumps(REDACTED, ensure_ascii=False) in sent
    assert json.loads(sent) == received
    assert leaked(sent, PRIVATE) == []
    assert "answered" in record.inner_text()
    # Nor is any of it in the node's logs (at DEBUG) or its files, its database aside.
    assert "DEBUG" in node.logs()
    assert files_holding(node.data_dir, PRIVATE) == []


def files_holding(directory: Path, values: tuple[str, ...]) -> list[str]:
    database = "sovereign.sqlite3"  # the member's own conversation is kept there, as written
    return [
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and not path.name.startswith(database)
        and any(value.encode() in path.read_bytes() for value in values)
    ]
