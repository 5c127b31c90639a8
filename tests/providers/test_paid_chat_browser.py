"""The chat with a paid outside model in Chromium, against a real node: a member picks an
outside model, sees its price and what leaves the node, asks, and gets the answer naming the
provider and what it cost; the owner then finds the request on the egress page (what was sent,
to whom, its cost and payment hash) and that payment, with its proof, in the wallet's ledger.
A local answer is asked again of the outside model in one click, and cross-checked against it,
side by side. A price that went up is refused, shown, and paid only once asked again.

The provider is the Aperture-shaped L402 double, paid over a channel between two lightningd
doubles (the node's and the provider's); each token answers one request, so every question
pays. Each page is audited (sideways scrolling, axe-core, CSP) and photographed into
build/screenshots at 390 and 1280 px."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, Page, expect

from tests.browser import audit_page, install_nostr_extension
from tests.instances import Instance, wait_for
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = [pytest.mark.processes, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
SIZES = [pytest.param(PHONE, id="phone"), pytest.param(DESKTOP, id="desktop")]
ANSWER_TOKENS = 24  # the local model's answers: short, the flows matter here
OUTSIDE = "aperture/strong-1"
PRICE_MSAT = 20_000


@dataclass
class Household:
    node: Instance
    owner: Keys
    provider: L402Double


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    """A claimed node with the engine, paying through its Lightning node; an L402 provider
    and a free one on the home network added to it."""
    base = tmp_path_factory.mktemp("household")
    (base / "node").mkdir()
    owner = Keys.generate()
    with (
        LightningdDouble(base / "provider-node", alias="provider") as provider_node,
        LightningdDouble(base / "household-node", alias="household") as household_node,
        L402Double(provider_node, price_msat=PRICE_MSAT, requests_per_token=1) as aperture,
        OpenAIShapedDouble() as lan,
    ):
        household_node.connect(provider_node, amount_sat=1_000_000, push_msat=100_000_000)
        node = Instance(base / "node", SOVEREIGN_LIGHTNING_RPC=str(household_node.rpc_file))
        node.run("web", "engine")
        node.wait_until("engine", "up", timeout=120)
        node.claim(owner)
        shell(node, f"services.provider_add({aperture.url!r}, kind='l402', name='aperture')")
        shell(node, f"services.provider_add({lan.url!r}, kind='openai', name='lan')")
        yield Household(node, owner, aperture)
        node.stop()


def shell(node: Instance, code: str) -> str:
    """Run Python in the node; its last line of output."""
    script = (
        "from apps.identity.models import Member\n"
        "from apps.identity.services import parse_pubkey\n"
        "from apps.inference import chat_settings\n"
        "from apps.privacy.models import Egress\n"
        "from apps.providers import services\n"
        f"{code}\n"
    )
    result = node.manage("shell", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def logged_in(browser: Browser, node: Instance, keys: Keys, viewport: dict[str, int]) -> Page:
    page = browser.new_context(viewport=viewport).new_page()  # type: ignore[arg-type]
    install_nostr_extension(page, keys)
    page.goto(f"{node.url}/login/")
    page.get_by_role("button", name="Log in with my Nostr extension").click()
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def new_member(household: Household, browser: Browser, viewport: dict[str, int]) -> Page:
    """A new member of the household, on the chat page, with short local answers."""
    keys = Keys.generate()
    npub = keys.public_key().to_bech32()
    assert household.node.manage("member", "add", npub).returncode == 0
    shell(
        household.node,
        f"member = Member.objects.get(pubkey=parse_pubkey({npub!r}))\n"
        f"chat_settings.defaults_set(member, {{'temperature': 0.7, 'top_p': 0.95, "
        f"'max_tokens': {ANSWER_TOKENS}}})",
    )
    page = logged_in(browser, household.node, keys, viewport)
    page.goto(f"{household.node.url}/chat/")
    page.npub = npub  # type: ignore[attr-defined]
    return page


def egress_of(node: Instance, question: str) -> dict[str, Any]:
    """The egress record of the request that carried this question (through the service's
    model: the egress page is the owner's view of the same rows)."""
    code = (
        f"row = next(e for e in Egress.objects.all() if {question!r} in e.body)\n"
        "import json; print(json.dumps({'provider': row.provider, 'model': row.model, "
        "'outcome': row.outcome, 'cost_msat': row.cost_msat, 'origin': row.origin, "
        "'payment_hash': row.payment_hash, 'body': json.loads(row.body)}))"
    )
    return dict(json.loads(shell(node, code)))


def send(page: Page, question: str) -> None:
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


def confirm_leaving(page: Page) -> None:
    """Send, in the preview of what leaves the node that a question to an outside model opens."""
    page.get_by_role("dialog", name="What will leave this node").get_by_role(
        "button", name="Send"
    ).click()


@pytest.mark.parametrize("viewport", SIZES)
def test_a_member_sees_a_price_asks_and_the_owner_sees_the_payment_and_the_egress_record(
    household: Household, browser: Browser, viewport: dict[str, int]
) -> None:
    page = new_member(household, browser, viewport)
    width = viewport["width"]
    picker = page.locator("select[name=model]")
    outside = picker.locator("optgroup[label='Outside (paid per question)'] option")
    priced = [f"{OUTSIDE} · up to 20 sat", "aperture/strong-2 · up to 20 sat"]
    expect(outside).to_have_text([*priced, "lan/strong-1 · free", "lan/strong-2 · free"])
    expect(page.locator("#egress-note")).to_be_hidden()  # the local model is chosen

    picker.select_option(OUTSIDE)

    expect(page.locator("#egress-note")).to_have_text(
        "Leaves this node: your question and the conversation so far go to aperture. "
        "Up to 20 sat a question, from your allowance."
    )
    expect(page.get_by_label("Question")).to_have_attribute("placeholder", f"Ask {OUTSIDE}…")
    audit_page(page, "chat-outside-picker")
    question = f"Which provider are you, at {width} px?"
    send(page, question)
    confirm_leaving(page)  # the preview of what leaves: test_chat_preview_browser.py

    answer = page.locator(".answer").last
    expect(answer.locator(".markdown")).to_have_text(f"l402 answers: {question}")
    expect(answer.locator(".provenance summary")).to_have_text(f"{OUTSIDE} · aperture · 20 sat")
    answer.locator(".provenance summary").click()
    expect(answer.locator(".provenance p")).to_contain_text(
        f"Answered outside this node by aperture · {OUTSIDE} · cost 20 sat · payment "
    )
    expect(answer.get_by_role("button", name=re.compile("^Ask "))).to_have_count(0)
    audit_page(page, "chat-outside-answer")
    page.reload()
    summary = page.locator(".answer .provenance summary")
    expect(summary).to_have_text(f"{OUTSIDE} · aperture · 20 sat")
    expect(picker).not_to_have_value(OUTSIDE)  # a page opens on the node's own model

    wait_for(
        lambda: egress_of(household.node, question)["outcome"] == "answered",
        30,
        "the egress record to be completed",
    )
    owner = logged_in(browser, household.node, household.owner, viewport)
    owner.goto(f"{household.node.url}/privacy/egress/")
    record = owner.locator(".egress-record").filter(has_text=question)
    expect(record).to_have_count(1)
    expect(record.locator(".egress-model")).to_have_text(OUTSIDE)
    npub = page.npub  # type: ignore[attr-defined]
    who = f"{npub[:12]}…{npub[-6:]}"
    facts = record.locator(".facts dd")
    expect(facts).to_have_text([who, "chat", "aperture", "20 sat", re.compile("…")])
    payment_hash = record.locator(".facts code").get_attribute("title") or ""
    record.locator("summary").click()
    expect(record.locator("pre")).to_contain_text(json.dumps(question))
    audit_page(owner, "egress-paid-chat")
    owner.goto(f"{household.node.url}/wallet/")
    paid = owner.locator("#ledger tbody tr").filter(has_text=payment_hash)
    expect(paid).to_have_count(1)
    expect(paid.locator("td").nth(2)).to_have_text("provider:aperture")
    expect(paid.locator("td").nth(4)).to_have_text("20 sat")
    expect(paid.locator(".state")).to_have_text("complete")
    paid.locator("summary").click()
    expect(paid.locator("summary")).to_have_text("holds")
    audit_page(owner, "wallet-paid-provider")


@pytest.mark.parametrize("viewport", SIZES)
def test_a_local_answer_is_asked_of_a_stronger_model_and_cross_checked_side_by_side(
    household: Household, browser: Browser, viewport: dict[str, int]
) -> None:
    page = new_member(household, browser, viewport)
    send(page, "Name a colour.")
    answer = page.locator(".answer").last
    expect(answer.locator(".provenance")).to_contain_text("sha256", timeout=90_000)
    audit_page(page, "chat-ask-stronger")
    page.get_by_text("Settings of this chat").click()
    stronger = page.locator("select[name=stronger]")
    stronger.select_option("lan/strong-2")
    expect(answer.locator("button.stronger")).to_have_text("Ask lan/strong-2 (free)")
    audit_page(page, "chat-settings-stronger")
    stronger.select_option(OUTSIDE)
    page.get_by_text("Settings of this chat").click()

    answer.get_by_role("button", name=f"Ask {OUTSIDE} (up to 20 sat)").click()
    confirm_leaving(page)

    answer = page.locator(".answer").last
    expect(answer.locator(".provenance summary")).to_have_text(f"{OUTSIDE} · aperture · 20 sat")
    expect(page.locator(".answer")).to_have_count(1)  # asked again, in the local one's place
    answer.get_by_role("button", name="Cross-check").click()
    form = page.locator(".crosscheck-form")
    expect(form.locator(f"input[value='{OUTSIDE}']")).to_be_checked()
    form.get_by_role("checkbox", name=re.compile("smollm2")).check()
    ask = form.get_by_role("button", name="Ask 2 models · up to 20 sat")
    expect(ask).to_be_enabled()
    audit_page(page, "chat-crosscheck-form")
    ask.click()
    confirm_leaving(page)  # what leaves, to each outside model: test_chat_preview_browser.py

    result = page.locator(".crosscheck-result")
    expect(result.get_by_role("heading", name="Cross-check · not kept")).to_be_visible(
        timeout=120_000
    )
    checked = result.locator(".checked")
    expect(checked).to_have_count(2)
    expect(checked.locator("h3")).to_have_text(["smollm2-135m-instruct", OUTSIDE])
    expect(checked.locator(".who")).to_have_text(["on this node · free", "by aperture · 20 sat"])
    expect(result.locator(".crosscheck-note")).to_contain_text("Where they agree and differ")
    first, second = (checked.nth(n).bounding_box() or {} for n in (0, 1))
    if viewport == PHONE:
        assert second["y"] > first["y"]  # stacked
    else:
        assert second["y"] == first["y"]  # side by side
    audit_page(page, "chat-crosscheck")
    send(page, "Thanks.")  # a new question puts the cross-check away
    expect(result).to_have_count(0)


def test_a_price_that_went_up_is_refused_shown_and_paid_only_once_asked_again(
    household: Household, browser: Browser
) -> None:
    page = new_member(household, browser, DESKTOP)
    picker = page.locator("select[name=model]")
    picker.select_option(OUTSIDE)
    household.provider.price_msat = 30_000
    try:
        shell(household.node, "services.provider_test('aperture')")  # the owner re-reads it
        send(page, "How much now?")

        expect(page.locator("#ask-error")).to_have_text(
            "The price went up from 20 sat to 30 sat; nothing was sent or paid. "
            "Ask again to accept the new price."
        )
        expect(page.locator(".answer")).to_have_count(0)
        expect(page.get_by_label("Question")).to_have_value("How much now?")
        expect(picker.locator("option:checked")).to_have_text(f"{OUTSIDE} · up to 30 sat")
        expect(page.locator("#egress-note")).to_contain_text("Up to 30 sat a question")
        audit_page(page, "chat-price-went-up")
        page.get_by_label("Question").press("Enter")
        confirm_leaving(page)

        summary = page.locator(".answer .provenance summary")
        expect(summary).to_have_text(f"{OUTSIDE} · aperture · 30 sat")
        expect(page.locator("#ask-error")).to_have_text("")
    finally:
        household.provider.price_msat = PRICE_MSAT
        shell(household.node, "services.provider_test('aperture')")
