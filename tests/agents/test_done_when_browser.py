"""Issue 16's "done when", end to end: a member starts a second-opinion task in the dashboard,
approves the plan, the owner approves the paid steps from a Nostr DM, and the member gets the
compared answers with their cost and receipts.

Everything is real: a node (web server, Celery worker with its beat, the engine on the bundled
SmolLM2), a Nostr relay on loopback, two L402 providers in Aperture's shape paid over a channel
between two lightningd doubles, Chromium with a NIP-07 extension for the member, and the owner's
"phone": a Nostr client with the owner's key that reads the node's NIP-17 DMs and replies with
their codes. The member's page is never reloaded once the plan is approved. Screenshots of the
done task at 390 and 1280 px go to build/screenshots/."""

from __future__ import annotations

import concurrent.futures
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from nostr_sdk import EventBuilder, Keys, Kind, PublicKey, Tag, UnwrappedGift, nip59_make_gift_wrap
from playwright.sync_api import Browser, Page, expect

from tests.browser import audit_page, install_nostr_extension, watch_content_security_policy
from tests.identity.peers import gift_wraps_for, publish
from tests.instances import Instance, wait_for
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double

pytestmark = [pytest.mark.processes, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
PRICE_MSAT = 20_000  # each provider's price of an answer
GOAL = "Is a short walk after lunch good for concentration? Answer in one sentence."
RUN_PATIENCE_MS = 240_000  # the engine answers twice on a shared CPU
CODE = re.compile(r"^Code: ([A-Z0-9]{8})$", re.MULTILINE)
STEP = re.compile(r"^Step (\d+): ", re.MULTILINE)
T = TypeVar("T")


def off_the_browsers_loop(call: Callable[[], T]) -> T:
    """Run a Nostr client call in a thread of its own: Playwright's loop runs in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(call).result()


@dataclass(frozen=True)
class Request:
    """An approval request the node sent the owner: the step it names, its code, its text."""

    position: int
    code: str
    text: str
    node: PublicKey


class OwnersPhone:
    """The owner's Nostr app: reads the node's DMs with the owner's key, replies by NIP-17."""

    def __init__(self, relay_url: str, keys: Keys) -> None:
        self.relay_url, self.keys = relay_url, keys

    def approval_requests(self) -> dict[int, Request]:
        """The requests with a code received so far, by the position of the step they name."""
        wraps = off_the_browsers_loop(lambda: gift_wraps_for(self.relay_url, self.keys))
        found: dict[int, Request] = {}
        for wrap in wraps:
            gift = UnwrappedGift.from_gift_wrap(self.keys, wrap)
            text = gift.rumor().content()
            code, step = CODE.search(text), STEP.search(text)
            if code and step:
                position = int(step.group(1))
                found[position] = Request(position, code.group(1), text, gift.sender())
        return found

    def reply(self, request: Request, text: str) -> None:
        """A gift-wrapped kind-14 message to the node that sent `request`, as any NIP-17 app."""
        rumor = (
            EventBuilder(Kind(14), text)
            .tags([Tag.public_key(request.node)])
            .finalize_unsigned(self.keys.public_key())
        ).ensure_id()
        wrap = nip59_make_gift_wrap(self.keys, request.node, rumor)
        off_the_browsers_loop(lambda: publish(self.relay_url, wrap))


@dataclass
class Household:
    node: Instance
    owner: Keys
    member: Keys
    providers: dict[str, L402Double]
    provider_node: LightningdDouble

    def rows(self, sql: str, *parameters: Any) -> list[dict[str, Any]]:
        """Rows of the node's database, read as the test's own witness."""
        with sqlite3.connect(self.node.data_dir / "sovereign.sqlite3", timeout=20) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, parameters)]


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory, relay_url: str) -> Iterator[Household]:
    """A claimed node with a member, its DMs on the test relay, paying through its Lightning
    node two L402 providers, each offering `strong-1` and `strong-2` at 20 sat an answer."""
    base = tmp_path_factory.mktemp("household")
    (base / "node").mkdir()
    owner, member = Keys.generate(), Keys.generate()
    with (
        LightningdDouble(base / "provider-node", alias="provider") as provider_node,
        LightningdDouble(base / "household-node", alias="household") as household_node,
        L402Double(provider_node, price_msat=PRICE_MSAT, requests_per_token=1) as alpha,
        L402Double(provider_node, price_msat=PRICE_MSAT, requests_per_token=1) as beta,
    ):
        household_node.connect(provider_node, amount_sat=1_000_000, push_msat=100_000_000)
        node = Instance(
            base / "node",
            SOVEREIGN_LIGHTNING_RPC=str(household_node.rpc_file),
            SOVEREIGN_NOSTR_RELAYS=relay_url,
        )
        node.run("web", "worker", "engine")
        try:
            node.wait_until("engine", "up", timeout=120)
            node.wait_until("worker", "up", timeout=120)
            node.claim(owner)
            added = node.manage("member", "add", member.public_key().to_bech32())
            assert added.returncode == 0, added.stderr
            for name, double in (("alpha", alpha), ("beta", beta)):
                shell(node, f"services.provider_add({double.url!r}, kind='l402', name={name!r})")
            yield Household(node, owner, member, {"alpha": alpha, "beta": beta}, provider_node)
        finally:
            node.stop()


def shell(node: Instance, code: str) -> None:
    ran = node.manage("shell", "-c", f"from apps.providers import services\n{code}")
    assert ran.returncode == 0, ran.stderr


def logged_in(household: Household, browser: Browser) -> Page:
    page = browser.new_context(viewport=DESKTOP).new_page()  # type: ignore[arg-type]
    watch_content_security_policy(page)
    install_nostr_extension(page, household.member)
    page.goto(f"{household.node.url}/login/")
    page.get_by_role("button", name="Log in with my Nostr extension").click()
    expect(page).not_to_have_url(f"{household.node.url}/login/")
    return page


def plan_made_and_approved(household: Household, page: Page) -> int:
    """The member's second opinion, from the form to the approved plan; the task's number."""
    page.goto(f"{household.node.url}/agents/")
    expect(page.locator("#live")).to_have_text("Live")
    page.get_by_label("Second opinion").check()
    page.get_by_label("Goal").fill(GOAL)
    page.get_by_label("Budget cap, in sats").fill("100")
    page.get_by_label("alpha/strong-1").check()
    page.get_by_label("beta/strong-2").check()
    page.get_by_role("button", name="Make a plan").click()

    expect(page.locator("#task-state")).to_have_text("Waiting for the plan to be approved")
    steps = page.locator(".step")
    expect(steps.locator(".step-target")).to_have_text(
        [re.compile("smollm2"), "alpha/strong-1", "beta/strong-2", re.compile("smollm2")]
    )
    expect(steps.locator(".step-where")).to_have_text(
        ["on this node", "leaves the node", "leaves the node", "on this node"]
    )
    task_id = int(page.locator("#task-panel").get_attribute("data-task") or 0)
    page.get_by_role("button", name="Approve the plan").click()
    expect(page.locator(".messages")).to_have_text("The plan is approved: the task runs.")
    return task_id


def approved_by_dm(household: Household, relay_url: str, task_id: int) -> list[Request]:
    """The owner's phone gets a DM for each outside step, and replies to each with its code."""
    phone = OwnersPhone(relay_url, household.owner)
    requests = wait_for(
        lambda: (found := phone.approval_requests()) and set(found) == {2, 3} and found,
        60,
        "the node's DMs asking the owner to approve steps 2 and 3",
    )
    for request in requests.values():
        phone.reply(request, request.code)
    return [requests[2], requests[3]]


def test_a_member_gets_a_second_opinion_paid_for_after_the_owner_approved_it_by_dm(
    household: Household, browser: Browser, relay_url: str
) -> None:
    page = logged_in(household, browser)
    task_id = plan_made_and_approved(household, page)

    # No reload from here: the worker's changes reach the page over its websocket.
    page.evaluate("() => { window.notReloaded = true; }")
    waiting = page.locator(".step[data-state=awaiting_approval]")
    expect(waiting).to_have_count(2, timeout=60_000)
    expect(waiting.first.locator(".hint")).to_have_text(
        "The owner decides; this page updates when they do."
    )

    first, second = approved_by_dm(household, relay_url, task_id)
    for request, model in ((first, "alpha/strong-1"), (second, "beta/strong-2")):
        assert f"task {task_id} (Second opinion) waits for your approval" in request.text
        assert f"Step {request.position}: model {model}; sends data out of the node." in (
            request.text
        )
        assert "Estimated cost: up to 20 sats." in request.text
        assert "walk after lunch" not in request.text  # the goal stays on the node

    expect(page.locator("#task-state")).to_have_text("Done", timeout=RUN_PATIENCE_MS)
    assert page.evaluate("() => window.notReloaded === true")

    # What the wallet's journal paid for this task: one payment to each provider.
    paid = household.rows(
        "SELECT payment_hash, amount_msat, fee_msat, state, purpose FROM wallet_payment "
        "WHERE caller = ? OR payer = ? ORDER BY id",
        f"agent:{task_id}",
        f"agent:{task_id}",
    )
    assert [p["state"] for p in paid] == ["complete", "complete"]
    total_msat = sum(p["amount_msat"] + (p["fee_msat"] or 0) for p in paid)
    assert total_msat == 2 * PRICE_MSAT
    invoices = household.provider_node.rpc.listinvoices()["invoices"]
    assert {i["payment_hash"] for i in invoices if i["status"] == "paid"} == {
        p["payment_hash"] for p in paid
    }
    for double in household.providers.values():
        assert double.challenges == 1 and list(double.tokens.values()) == [1]
    decided = household.rows(
        "SELECT s.position, a.how, a.approved FROM agents_approval a "
        "JOIN agents_step s ON s.id = a.step_id WHERE a.task_id = ? ORDER BY s.position",
        task_id,
    )
    assert decided == [
        {"position": 2, "how": "dm", "approved": 1},
        {"position": 3, "how": "dm", "approved": 1},
    ]

    # The member's page: the compared answer, its cost, who answered, the receipts.
    result = page.locator(".result")
    expect(result.locator(".result-text")).not_to_be_empty()
    facts = result.locator(".facts dd")
    cost = f"{total_msat // 1000} sat"
    expect(facts).to_have_text([cost, re.compile("alpha/strong-1"), "alpha, beta"])
    expect(facts.nth(1)).to_contain_text("beta/strong-2")
    # The journal's purposes name the provider paid and the step: l402:<provider>:agent-…
    paid_to = {p["purpose"].split(":")[1]: p["payment_hash"] for p in paid}
    assert set(paid_to) == {"alpha", "beta"}
    expect(result.locator(".payment-hash")).to_have_text([paid_to["alpha"], paid_to["beta"]])
    expect(page.locator("#step-2 .payment-hash")).to_have_text(paid_to["alpha"])
    expect(page.locator("#step-3 .payment-hash")).to_have_text(paid_to["beta"])
    for position in (2, 3):
        answer = page.locator(f"#step-{position} .step-result pre")
        expect(answer).to_contain_text("l402 answers: Answer this as well as you can.")
    expect(page.locator("#task-spent")).to_have_text(cost)
    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)  # type: ignore[arg-type]
        audit_page(page, "agents-done-paid-by-dm")
