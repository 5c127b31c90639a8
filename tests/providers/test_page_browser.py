"""The Providers page and the egress record in Chromium, against a real node and a real
OpenAI-shaped server on loopback: the owner adds and removes a provider and sets, changes and
removes a route through the page, a member's question leaves the node through /v1, and both
pages pass the audit on a phone and a desktop, in both themes."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import audit_page
from tests.dashboard.test_pages_browser import DESKTOP, PEOPLE, PHONE, logged_in
from tests.instances import Instance
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = [pytest.mark.processes, pytest.mark.browser]
# A question with markup (shown as text, never run) and a long unbroken word (wrapped, never
# widening the page), as a member may well send.
QUESTION = "Is <script>alert('x')</script> safe? " + "unbroken" * 40 + " " + "long words " * 60


@pytest.fixture(scope="module")
def lan() -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        yield double


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, lan: OpenAIShapedDouble) -> Iterator[Instance]:
    """A node with one provider and one route added from its shell, and one member's question
    sent to the provider."""
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.serve_web()
    instance.claim(PEOPLE["owner"])
    member = PEOPLE["member"].public_key().to_bech32()
    assert instance.manage("member", "add", member).returncode == 0
    added = instance.manage("providers", "add", lan.url, "--kind", "openai", "--name", "lan")
    assert added.returncode == 0, added.stderr
    routed = instance.manage(
        "providers",
        "route",
        "set",
        "strong",
        "--policy",
        "fallback",
        "lan/strong-1",
        "lan/strong-2",
    )
    assert routed.returncode == 0, routed.stderr
    created = instance.manage("apikey", "create", member, "--name", "phone")
    client = openai.OpenAI(
        base_url=f"{instance.url}/v1",
        api_key=created.stdout.strip().splitlines()[-1],
        max_retries=0,
    )
    answer = client.chat.completions.create(
        model="lan/strong-1", messages=[{"role": "user", "content": QUESTION}]
    )
    assert answer.choices[0].message.content == f"double answers: {QUESTION}"
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


def test_the_owner_adds_and_removes_a_provider_on_the_page(
    node: Instance, browser: Browser, lan: OpenAIShapedDouble
) -> None:
    page = logged_in(node, browser, "owner")
    page.goto(f"{node.url}/providers/")
    page.get_by_label("Base URL").fill(lan.url)
    page.get_by_label("Kind").select_option("openai")
    page.get_by_label("Name", exact=True).fill("second")
    page.get_by_role("button", name="Add provider").click()
    expect(page.get_by_role("status")).to_have_text("Added second: 2 models listed.")
    expect(page.locator("#provider-second")).to_contain_text("second/strong-2")
    audit_both_widths(page, "owner-light-providers")

    card = page.locator("#provider-second")
    card.get_by_role("button", name="Remove second").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove second?")
    dialog.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text("Removed second")
    expect(card).to_have_count(0)
    expect(page.locator("#provider-lan .record dd").first).to_have_text("1")  # its request


def test_the_owner_sets_changes_and_removes_a_route_on_a_phone(
    node: Instance, browser: Browser
) -> None:
    page = logged_in(node, browser, "owner")
    page.set_viewport_size(PHONE)
    page.goto(f"{node.url}/providers/")
    expect(page.locator("#route-strong li")).to_have_text(
        ["1. lan/strong-1 free (home network)", "2. lan/strong-2 free (home network)"]
    )
    form = page.locator(".route-form")
    form.get_by_label("Route name").fill("private")
    form.get_by_label("Spread").check()
    form.get_by_label("1st").select_option("lan/strong-2")
    form.get_by_label("2nd").select_option("lan/strong-1")
    form.get_by_role("button", name="Set route").click()
    expect(page.get_by_role("status")).to_have_text("Set route/private: 2 models.")
    expect(page.locator("#route-private li code")).to_have_text(["lan/strong-2", "lan/strong-1"])
    audit_both_widths(page, "owner-light-routes")

    page.get_by_role("link", name="Change route/private").click()
    expect(form.get_by_label("Spread")).to_be_checked()
    expect(form.get_by_label("1st")).to_have_value("lan/strong-2")
    form.get_by_label("Fallback").check()
    form.get_by_label("2nd").select_option("")
    form.get_by_role("button", name="Set route").click()
    expect(page.get_by_role("status")).to_have_text("Set route/private: 1 model.")
    expect(page.locator("#route-private li code")).to_have_text(["lan/strong-2"])

    page.get_by_role("button", name="Remove route/private").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove route/private?")
    dialog.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text("Removed route/private")
    expect(page.locator("#route-private")).to_have_count(0)
    expect(page.locator("#route-strong")).to_have_count(1)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_owner_reads_the_egress_record_with_the_body_sent(
    node: Instance, browser: Browser, theme: str
) -> None:
    page = logged_in(node, browser, "owner", theme)
    page.goto(f"{node.url}/privacy/egress/")
    record = page.locator("#egress .egress-record")
    expect(record).to_have_count(1)
    expect(record).to_contain_text("lan/strong-1")
    expect(record).to_contain_text("answered")

    open_every_body(page)
    expect(record.locator("pre")).to_contain_text("<script>alert('x')</script>")
    audit_both_widths(page, f"owner-{theme}-egress")
    if theme == "dark":
        page.goto(f"{node.url}/providers/")
        audit_both_widths(page, "owner-dark-providers")


def test_a_member_reads_their_own_record_and_not_the_providers_page(
    node: Instance, browser: Browser
) -> None:
    page = logged_in(node, browser, "member")
    page.get_by_role("link", name="Privacy").click()
    expect(page.locator("#egress .egress-record")).to_have_count(1)
    open_every_body(page)
    audit_both_widths(page, "member-light-egress")

    expect(page.get_by_role("link", name="Providers")).to_have_count(0)
    response = page.goto(f"{node.url}/providers/")
    assert response is not None and response.status == 403
