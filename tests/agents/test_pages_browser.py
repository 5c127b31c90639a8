"""The Agents pages in Chromium against a real node: web server, Celery worker, the engine on
the bundled SmolLM2 file, and an outside provider double on loopback. A member's private rewrite
runs end to end while the page follows it live; the owner approves a second opinion's outside
steps from their preview, above the step-up threshold with a fresh NIP-07 signature, and its
result arrives without a reload. Screenshots at 1280 and 390 px go to build/screenshots/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, Page, expect

from tests.browser import audit_page, install_nostr_extension, watch_content_security_policy
from tests.instances import Instance
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = [pytest.mark.processes, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
PEOPLE = {name: Keys.generate() for name in ("owner", "member")}
RUN_PATIENCE_MS = 240_000  # the engine answers on a shared CPU


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        yield double


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, provider: OpenAIShapedDouble
) -> Iterator[Instance]:
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.run("web", "engine", "worker")
    instance.wait_until("engine", "up", timeout=120)
    instance.wait_until("worker", "up", timeout=120)
    instance.claim(PEOPLE["owner"])
    added = instance.manage("member", "add", PEOPLE["member"].public_key().to_bech32())
    assert added.returncode == 0, added.stderr
    added = instance.manage("providers", "add", provider.url, "--kind", "openai", "--name", "lan")
    assert added.returncode == 0, added.stderr
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


def shell(node: Instance, code: str) -> str:
    ran = node.manage("shell", "-c", code)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip().splitlines()[-1]


def test_a_members_private_rewrite_runs_and_the_page_follows_it_live(
    node: Instance, browser: Browser
) -> None:
    page = logged_in(node, browser, "member")
    page.goto(f"{node.url}/agents/")
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("#outside-models")).to_be_hidden()  # private rewrite: nothing leaves
    page.get_by_label("Goal").fill("our dog barks when the postman comes, it is very loud")
    audit_both_widths(page, "agents-list")

    page.get_by_role("button", name="Make a plan").click()

    expect(page.locator("#task-state")).to_have_text("Waiting for the plan to be approved")
    expect(page.locator(".step")).to_have_count(1)
    expect(page.locator(".step .step-where")).to_have_text("on this node")
    audit_both_widths(page, "agents-plan")
    page.get_by_role("button", name="Approve the plan").click()

    # No reload from here: the worker's changes reach the page over its websocket.
    page.evaluate("() => { window.notReloaded = true; }")
    expect(page.locator("#task-state")).to_have_text("Done", timeout=RUN_PATIENCE_MS)
    assert page.evaluate("() => window.notReloaded === true")
    expect(page.locator(".result-text")).not_to_be_empty()
    expect(page.locator(".result")).to_contain_text("none: nothing left the node")
    audit_both_widths(page, "agents-done-local")


SECOND_OPINION = """
from apps.agents import services
from apps.agents.services import OutsidePick, Policy
from apps.identity.models import Member
from apps.inference.models import LocalModel
owner = Member.objects.get(role="owner")
policy = Policy(0, 1_000_000, data_may_leave=True, providers=("lan",))
task = services.task_create(owner, "My e-mail is annika@example.org. Are cats or dogs calmer?",
    10_000_000, policy)
picks = [OutsidePick("lan/strong-1", 2_000_000), OutsidePick("lan/strong-2", 500_000)]
local = LocalModel.objects.order_by("name").first().name
services.plan_from_template(task, "second_opinion", local_model=local, outside=picks)
print(task.pk)
"""


def test_the_owner_approves_what_leaves_and_signs_again_above_the_step_up_threshold(
    node: Instance, browser: Browser, provider: OpenAIShapedDouble
) -> None:
    task_id = shell(node, SECOND_OPINION)
    page = logged_in(node, browser, "owner")
    page.goto(f"{node.url}/agents/{task_id}/")
    expect(page.locator("#live")).to_have_text("Live")
    page.get_by_label("Lower its cost to, in sats").nth(1).fill("400")  # step 3's
    page.locator("#step-3").get_by_role("button", name="Lower").click()
    expect(page.locator("#step-3 .facts")).to_contain_text("400 sat")
    page.get_by_role("button", name="Approve the plan").click()

    waiting = page.locator(".step[data-state=awaiting_approval]")
    expect(waiting).to_have_count(2, timeout=120_000)  # shown live, once the worker gated them
    first, second = waiting.nth(0), waiting.nth(1)
    expect(first.locator(".leaving-text mark")).to_have_text("[EMAIL_1]")
    expect(first.locator(".leaving-text")).not_to_contain_text("annika@example.org")
    expect(first.get_by_role("button", name="Sign and approve")).to_be_visible()
    expect(second.get_by_role("button", name="Approve step 3")).to_be_visible()
    expect(second.locator(".waiting-why")).to_contain_text("400 sat at most")
    audit_both_widths(page, "agents-step-waiting")
    page.goto(f"{node.url}/agents/")
    expect(page.locator(".waiting-count")).to_have_text("2 steps waiting for your approval.")
    expect(page.locator(".task-row")).to_have_count(2)  # the owner sees everyone's
    audit_both_widths(page, "agents-list-owner")
    page.goto(f"{node.url}/agents/{task_id}/")
    expect(page.locator("#live")).to_have_text("Live")

    first.get_by_role("button", name="Sign and approve").click()
    expect(page.locator(".messages")).to_have_text("Step 2 is approved.")
    page.locator("#step-3").get_by_role("button", name="Approve step 3").click()

    expect(page.locator("#task-state")).to_have_text("Done", timeout=RUN_PATIENCE_MS)
    sent = [body["messages"][-1]["content"] for body in provider.requests]
    assert len(sent) == 2 and all("[EMAIL_1]" in text for text in sent)
    assert not any("annika@example.org" in text for text in sent)
    expect(page.locator(".result")).to_contain_text("lan")
    audit_both_widths(page, "agents-done-outside")
