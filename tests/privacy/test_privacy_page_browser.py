"""The Privacy page in Chromium, against a real node and a real OpenAI-shaped server on loopback:
a member's question went out redacted, the owner's went to a provider marked trusted from the
shell. The owner reads both records, exports them, turns a detector off and keeps a list of
words; a member reads only their own. Phone and desktop widths, both themes, photographed into
build/screenshots."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import audit_page
from tests.dashboard.test_pages_browser import DESKTOP, PEOPLE, PHONE, logged_in
from tests.instances import Instance
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = [pytest.mark.processes, pytest.mark.browser]
MEMBERS_QUESTION = (
    "Please draft a short note to my landlord. Reply to ana.mueller@example.org or call me on "
    "+49 30 12345678; the rent goes from DE89 3704 0044 0532 0130 00 as before. <b>Thanks!</b>"
)
OWNERS_QUESTION = "What does a Lightning channel cost to open this week?"


@pytest.fixture(scope="module")
def lan() -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        yield double


def ask(instance: Instance, who: str, model: str, question: str) -> None:
    npub = PEOPLE[who].public_key().to_bech32()
    created = instance.manage("apikey", "create", npub, "--name", f"{who}-key")
    assert created.returncode == 0, created.stderr
    client = openai.OpenAI(
        base_url=f"{instance.url}/v1",
        api_key=created.stdout.strip().splitlines()[-1],
        max_retries=0,
    )
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, lan: OpenAIShapedDouble) -> Iterator[Instance]:
    """A member's question sent to `lan` (redacted), the owner's to `home` (trusted)."""
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.serve_web()
    instance.claim(PEOPLE["owner"])
    assert (
        instance.manage("member", "add", PEOPLE["member"].public_key().to_bech32()).returncode == 0
    )
    for name in ("lan", "home"):
        added = instance.manage("providers", "add", lan.url, "--kind", "openai", "--name", name)
        assert added.returncode == 0, added.stderr
    trusted = instance.manage("providers", "trust", "home")
    assert trusted.stdout == "home is now trusted: nothing redacted.\n", trusted.stderr
    ask(instance, "member", "lan/strong-1", MEMBERS_QUESTION)
    ask(instance, "owner", "home/strong-2", OWNERS_QUESTION)
    yield instance
    instance.stop()


def audit_both_widths(page: Page, name: str) -> None:
    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)
        audit_page(page, name)


def open_every_body(page: Page) -> None:
    for summary in page.locator("#egress summary").all():
        summary.click()
    expect(page.locator("#egress pre").first).to_be_visible()


def test_the_owner_reads_every_record_with_what_was_taken_out(
    node: Instance, browser: Browser, lan: OpenAIShapedDouble
) -> None:
    page = logged_in(node, browser, "owner")
    page.get_by_role("link", name="Privacy", exact=True).click()
    expect(page).to_have_url(f"{node.url}/privacy/")
    records = page.locator("#egress .egress-record")
    expect(records).to_have_count(2)

    redacted, trusted = records.nth(1), records.nth(0)
    expect(redacted.locator(".found-kind")).to_have_text(
        ["1 e-mail address", "1 IBAN", "1 phone number"]
    )
    expect(redacted.locator(".egress-question mark.placeholder")).to_have_text(
        ["[EMAIL_1]", "[PHONE_1]", "[IBAN_1]"]
    )
    expect(redacted.locator(".egress-question")).to_contain_text("<b>Thanks!</b>")
    expect(redacted).not_to_contain_text("ana.mueller@example.org")
    expect(trusted.locator(".found-trusted")).to_have_text("trusted provider — nothing redacted")
    expect(trusted.locator(".egress-question")).to_contain_text(OWNERS_QUESTION)
    assert "ana.mueller" not in json.dumps(lan.requests[0])  # as the record says
    open_every_body(page)
    expect(redacted.locator("pre mark.placeholder")).to_have_count(3)
    audit_both_widths(page, "owner-light-privacy")

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Export as JSON").click()
    exported = json.loads(Path(downloading.value.path()).read_text())
    assert [record["provider"] for record in exported] == ["home", "lan"]
    assert [record["redacted"] for record in exported] == [False, True]


def test_the_owner_turns_a_detector_off_and_keeps_a_list_of_words(
    node: Instance, browser: Browser
) -> None:
    page = logged_in(node, browser, "owner")
    page.set_viewport_size(PHONE)
    page.goto(f"{node.url}/privacy/")
    page.get_by_role("link", name="What is taken out").click()
    page.get_by_label("Phone numbers").uncheck()
    page.get_by_label("Keep each record, in days").fill("30")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.get_by_label("Phone numbers")).not_to_be_checked()
    expect(page.get_by_label("E-mail addresses")).to_be_checked()
    expect(page.get_by_label("Keep each record, in days")).to_have_value("30")

    page.get_by_label("Words", exact=True).fill("Müller, Hauptstraße\nSt. Mary's School")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Added 3 words to the list.")
    expect(page.locator(".term")).to_have_text(["Hauptstraße", "Müller", "St. Mary's School"])
    audit_both_widths(page, "owner-light-privacy-settings")

    page.get_by_role("button", name="Remove Müller").click()
    expect(page.get_by_role("status")).to_have_text("Removed 1 word from the list.")
    expect(page.locator(".term")).to_have_text(["Hauptstraße", "St. Mary's School"])

    page.get_by_label("Words", exact=True).fill("x")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("A word must have at least 2 letters.")
    expect(page.locator(".term")).to_have_count(2)


def test_the_page_in_the_dark_theme_and_the_trusted_provider(
    node: Instance, browser: Browser
) -> None:
    page = logged_in(node, browser, "owner", "dark")
    page.goto(f"{node.url}/privacy/")
    open_every_body(page)
    audit_both_widths(page, "owner-dark-privacy")

    page.goto(f"{node.url}/providers/")
    card = page.locator("#provider-home")
    expect(card.locator(".kind.trusted")).to_have_text("trusted: nothing redacted")
    expect(page.locator("#provider-lan .kind.trusted")).to_have_count(0)
    audit_both_widths(page, "owner-dark-providers-trusted")


def test_a_member_reads_only_their_own(node: Instance, browser: Browser) -> None:
    page = logged_in(node, browser, "member")
    page.get_by_role("link", name="Privacy", exact=True).click()
    records = page.locator("#egress .egress-record")
    expect(records).to_have_count(1)
    expect(records).to_contain_text("lan/strong-1")
    expect(page.locator("#settings")).to_have_count(0)
    expect(page.locator("#terms")).to_have_count(0)
    audit_both_widths(page, "member-light-privacy")
