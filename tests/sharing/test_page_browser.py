"""The Sharing page in Chromium, against a real node publishing to a real relay: the owner
puts a model on sale, shares one with a friend, gives the node's onion address, announces and
withdraws; a refused price names what is wrong. Phone and desktop widths, photographed into
build/screenshots."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, Page, expect

from tests.browser import audit_page, install_nostr_extension, watch_content_security_policy
from tests.dashboard.test_pages_browser import DESKTOP, PHONE
from tests.instances import Instance

pytestmark = [pytest.mark.processes, pytest.mark.browser]
PEOPLE = {name: Keys.generate() for name in ("owner", "member", "friend")}
ONION = "http://" + "b" * 56 + ".onion"
SETUP = """
from django.utils import timezone
from apps.inference.models import LocalModel
from apps.sharing.models import Balance, Sale
for name in ("qwen3-4b", "smollm2-135m"):
    LocalModel.objects.create(name=name, file_name=f"{name}.gguf", size=1, sha256="a" * 64,
        architecture="llama", parameters=1, quantization="Q8_0", source="bundled")
balance = Balance.objects.create(kind="l402", token_id="ab" * 32, balance_msat=9000,
    expires_at=timezone.now())
Sale.objects.create(balance=balance, model="qwen3-4b", prompt_tokens=12, completion_tokens=240,
    cost_msat=21000)
print("ok")
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, relay_url: str) -> Iterator[Instance]:
    instance = Instance(tmp_path_factory.mktemp("node"), SOVEREIGN_NOSTR_RELAYS=relay_url)
    instance.serve_web()
    instance.claim(PEOPLE["owner"])
    for role in ("member", "friend"):
        npub = PEOPLE[role].public_key().to_bech32()
        assert instance.manage("member", "add", npub, "--role", role).returncode == 0
    ran = instance.manage("shell", "-c", SETUP)
    assert ran.returncode == 0, ran.stderr
    yield instance
    instance.stop()


def logged_in(node: Instance, browser: Browser, who: str) -> Page:
    page = browser.new_context(viewport=DESKTOP).new_page()
    watch_content_security_policy(page)
    install_nostr_extension(page, PEOPLE[who])
    page.goto(f"{node.url}/login/")
    page.get_by_role("button", name="Log in with my Nostr extension").click()
    expect(page).not_to_have_url(f"{node.url}/login/")
    return page


def audit_both_widths(page: Page, name: str) -> None:
    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)
        audit_page(page, name)


def test_the_owner_sells_shares_announces_and_withdraws(node: Instance, browser: Browser) -> None:
    page = logged_in(node, browser, "owner")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sharing").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sharing")
    expect(page.locator("#sales-count")).to_have_text("1")
    audit_both_widths(page, "sharing-empty")

    page.get_by_label("Local model").select_option("qwen3-4b")
    page.get_by_label("Price, in sats").fill("21")
    page.get_by_role("button", name="Sell", exact=True).click()
    expect(page.locator("#offer-qwen3-4b")).to_contain_text("21 sat per request")

    # Per 1,000 tokens with no most per request: refused, named, nothing changed.
    page.get_by_label("Local model").select_option("smollm2-135m")
    page.get_by_label("A price per 1,000 tokens").check()
    page.get_by_label("Price, in sats").fill("2")
    page.get_by_role("button", name="Sell", exact=True).click()
    expect(page.locator("#offer-error")).to_contain_text("needs a most")
    expect(page.locator("#offer-smollm2-135m")).to_have_count(0)
    page.get_by_label("Most a request costs, in sats").fill("40")
    page.get_by_role("button", name="Sell", exact=True).click()
    expect(page.locator("#offer-smollm2-135m")).to_contain_text("2 sat per 1,000 tokens")

    friend = page.locator("article.friend")
    friend.get_by_label("smollm2-135m", exact=True).check()
    friend.get_by_label("Requests a day").fill("50")
    friend.get_by_role("button", name="Share", exact=True).click()
    expect(page.locator("article.friend .record")).to_contain_text("0 of 50")

    page.get_by_label("Where strangers reach the node").fill(ONION)
    page.get_by_role("button", name="Save addresses").click()
    page.get_by_role("button", name="Announce", exact=True).click()
    expect(page.locator("#listing-state")).to_contain_text("Announced")
    expect(page.locator("#listing")).to_contain_text("Announced on ws://127.0.0.1")
    audit_both_widths(page, "sharing")

    page.get_by_role("button", name="Withdraw").click()
    page.locator("#confirm-yes").click()
    expect(page.locator("#listing-state")).to_contain_text("Withdrawn")


def test_a_member_is_refused_the_page(node: Instance, browser: Browser) -> None:
    page = logged_in(node, browser, "member")
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Sharing")
    ).to_have_count(0)
    answer = page.goto(f"{node.url}/sharing/")
    assert answer is not None and answer.status == 403


def test_a_friend_sees_what_is_shared_and_the_chat_offers_only_that(
    node: Instance, browser: Browser
) -> None:
    npub = PEOPLE["friend"].public_key().to_bech32()
    shared = node.manage(
        "sharing", "friend", npub, "--models", "qwen3-4b", "--daily-requests", "30"
    )
    assert shared.returncode == 0, shared.stderr
    page = logged_in(node, browser, "friend")
    expect(page).to_have_url(f"{node.url}/shared/")
    expect(page.locator("#shared-list")).to_have_text("qwen3-4b")
    expect(page.locator("#quota")).to_contain_text("0 of 30 requests")
    audit_both_widths(page, "friend-shared")

    page.get_by_role("link", name="Open the chat").click()
    picker = page.locator("select[name=model]")
    expect(picker.locator("option")).to_have_count(1)
    expect(picker.locator("option")).to_have_text("qwen3-4b")
    page.set_viewport_size(PHONE)
    page.reload()  # as a phone opens it: the drawer closed, not caught mid-slide by a resize
    audit_both_widths(page, "friend-chat")
