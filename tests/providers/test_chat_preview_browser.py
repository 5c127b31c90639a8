"""The chat's preview in Chromium, against a real node: before a question goes to an outside
model, the member sees what will leave the node (private values as highlighted placeholders),
and sends or cancels. Cancelled, nothing reaches the provider and the question is back in the
composer; sent, the provider receives only placeholders and the member reads the answer with
their own values put back, streamed. A seed phrase is stopped in the panel, with only Cancel; a
trusted provider is shown the text as written; a question to the node's own model is asked at
once, with no preview. A cross-check with outside models shows, before any is asked, each
outside model it goes to and the text each receives; cancelled, the form is as it was and
nothing was sent; sent, the paid provider receives only placeholders.

The paid provider is the Aperture-shaped L402 double, paid over a channel between two lightningd
doubles; each token answers one request, so every question that reaches it pays. The trusted
one is a free OpenAI-shaped double on the home network. Each page is audited (sideways
scrolling, axe-core, CSP) and photographed into build/screenshots at 390 and 1280 px."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser import audit_page
from tests.instances import Instance
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.openai_shape import OpenAIShapedDouble
from tests.providers.test_paid_chat_browser import (
    DESKTOP,
    PHONE,
    SIZES,
    new_member,
    send,
    shell,
)

pytestmark = [pytest.mark.processes, pytest.mark.browser]
OUTSIDE = "aperture/strong-1"
TRUSTED = "lan/strong-1"
PRICE_MSAT = 20_000
SEED_12 = " ".join(["abandon"] * 11 + ["about"])  # BIP-39's all-zero test vector


@dataclass
class Household:
    node: Instance
    aperture: L402Double
    lan: OpenAIShapedDouble

    def reached(self) -> int:
        """Requests that reached the paid provider: its 402s and the requests it answered."""
        return self.aperture.challenges + len(self.aperture.requests)


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    """A claimed node with the engine, paying through its Lightning node; an L402 provider, and
    a free one on the home network that the owner trusts."""
    base = tmp_path_factory.mktemp("household")
    (base / "node").mkdir()
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
        node.claim(Keys.generate())
        shell(node, f"services.provider_add({aperture.url!r}, kind='l402', name='aperture')")
        shell(node, f"services.provider_add({lan.url!r}, kind='openai', name='lan')")
        shell(node, "services.Provider.objects.filter(name='lan').update(trusted=True)")
        yield Household(node, aperture, lan)
        node.stop()


def egress_count(node: Instance) -> int:
    return int(shell(node, "print(Egress.objects.count())"))


def panel(page: Page) -> Locator:
    return page.get_by_role("dialog", name="What will leave this node")


@pytest.mark.parametrize("viewport", SIZES)
def test_a_member_sees_what_will_leave_cancels_then_sends_and_reads_their_own_values(
    household: Household, browser: Browser, viewport: dict[str, int]
) -> None:
    page = new_member(household, browser, viewport)
    width = viewport["width"]
    email = f"ana.{width}@example.org"
    question = f"Write to {email} or call +49 30 1234567 about the {width} px plan."
    leaving = f"Write to [EMAIL_1] or call [PHONE_1] about the {width} px plan."
    page.locator("select[name=model]").select_option(OUTSIDE)
    reached, recorded = household.reached(), egress_count(household.node)

    send(page, question)

    shown = panel(page)
    expect(shown.locator("#leaving-to")).to_have_text(f"To aperture · {OUTSIDE} · up to 20 sat")
    expect(shown.locator("#leaving-found")).to_have_text(
        "1 e-mail address, 1 phone number replaced by placeholders (highlighted). "
        "The answer comes back with them put back."
    )
    expect(shown.locator(".leaving-role")).to_have_text(["Question"])
    expect(shown.locator(".leaving-text")).to_have_text(leaving)
    expect(shown.locator("mark")).to_have_text(["[EMAIL_1]", "[PHONE_1]"])
    expect(shown.get_by_role("button", name="Send")).to_be_focused()
    audit_page(page, "chat-preview")
    page.emulate_media(color_scheme="dark")
    audit_page(page, "chat-preview-dark")  # the highlights keep their contrast
    page.keyboard.press("Escape")

    expect(shown).to_be_hidden()
    expect(page.get_by_label("Question")).to_have_value(question)
    expect(page.get_by_label("Question")).to_be_focused()
    expect(page.locator(".transcript > li")).to_have_count(0)
    assert household.reached() == reached  # nothing was sent, so nothing was paid
    assert egress_count(household.node) == recorded

    page.get_by_label("Question").press("Enter")
    expect(shown.locator(".leaving-text")).to_have_text(leaving)
    shown.get_by_role("button", name="Send").click()

    answer = page.locator(".answer").last
    expect(answer.locator(".markdown")).to_have_text(f"l402 answers: {question}")
    expect(answer.locator(".provenance summary")).to_have_text(f"{OUTSIDE} · aperture · 20 sat")
    sent = household.aperture.requests[-1]["messages"]
    assert sent == [{"role": "user", "content": leaving}]
    assert email not in json.dumps(household.aperture.requests)
    assert egress_count(household.node) == recorded + 1


def test_a_seed_phrase_is_stopped_in_the_panel_with_only_cancel(
    household: Household, browser: Browser
) -> None:
    page = new_member(household, browser, DESKTOP)
    page.locator("select[name=model]").select_option(OUTSIDE)
    question = f"Keep my seed safe: {SEED_12}"
    reached = household.reached()

    send(page, question)

    shown = panel(page)
    expect(shown.locator(".leaving-stop")).to_have_text(
        "Not sent: the message contains a wallet seed phrase (BIP-39 words). "
        "Remove it and send again."
    )
    expect(shown.get_by_role("button")).to_have_text(["Cancel"])
    expect(shown.get_by_role("button", name="Cancel")).to_be_focused()
    audit_page(page, "chat-preview-stopped")
    shown.get_by_role("button", name="Cancel").click()

    expect(shown).to_be_hidden()
    expect(page.get_by_label("Question")).to_have_value(question)
    expect(page.locator(".transcript > li")).to_have_count(0)
    assert household.reached() == reached


@pytest.mark.parametrize("viewport", SIZES)
def test_a_trusted_provider_gets_the_text_as_written_and_the_nodes_model_no_preview(
    household: Household, browser: Browser, viewport: dict[str, int]
) -> None:
    page = new_member(household, browser, viewport)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    send(page, "Name a colour for bo@example.org.")  # the node's own model

    answer = page.locator(".answer").last
    expect(answer.locator(".provenance")).to_contain_text("sha256", timeout=90_000)
    assert not [url for url in asked if url.endswith("/chat/preview")]
    answer.get_by_role("button", name=f"Ask {OUTSIDE} (up to 20 sat)").click()
    shown = panel(page)
    expect(shown.locator("mark")).to_have_text(["[EMAIL_1]"])
    shown.get_by_role("button", name="Cancel").click()
    expect(page.locator(".answer .provenance")).to_contain_text("sha256")  # the local one is back

    page.locator("select[name=model]").select_option(TRUSTED)
    question = "Write to bo@example.org, please."
    send(page, question)

    expect(shown.locator("#leaving-to")).to_have_text(f"To lan · {TRUSTED} · free")
    expect(shown.locator("#leaving-found")).to_have_text("Trusted provider: sent as written.")
    expect(shown.locator("ol").first.locator(".leaving-text")).to_have_text(question)
    expect(shown.locator("mark")).to_have_count(0)
    expect(shown.locator(".leaving-earlier summary")).to_have_text(
        "Also sent: the conversation before it (2 messages)"
    )
    shown.locator(".leaving-earlier summary").click()
    expect(shown.locator(".leaving-earlier .leaving-role")).to_have_text(["Question", "Answer"])
    audit_page(page, "chat-preview-trusted")
    shown.get_by_role("button", name="Send").click()
    expect(page.locator(".answer").last.locator(".markdown")).to_have_text(
        f"double answers: {question}"
    )
    assert household.lan.requests[-1]["messages"][-1]["content"] == question

    page.locator(".question").last.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited question").fill("Write to cy@example.org instead.")
    page.get_by_label("Edited question").press("Enter")
    expect(shown.locator("ol").first.locator(".leaving-text")).to_have_text(
        "Write to cy@example.org instead."
    )
    page.keyboard.press("Escape")
    expect(page.get_by_label("Edited question")).to_have_value("Write to cy@example.org instead.")
    expect(page.locator(".answer")).to_have_count(2)  # taken out for the edit, and put back
    assert re.search("cy@example", json.dumps(household.lan.requests)) is None


def local_answer(page: Page, question: str) -> Locator:
    """The question answered by the node's own model; the answer, ready to cross-check."""
    send(page, question)
    answer = page.locator(".answer").last
    expect(answer.locator(".provenance")).to_contain_text("sha256", timeout=90_000)
    answer.get_by_role("button", name="Cross-check").click()
    return page.locator(".crosscheck-form")


@pytest.mark.parametrize("viewport", SIZES)
def test_a_cross_check_shows_what_leaves_to_each_outside_model_before_asking(
    household: Household, browser: Browser, viewport: dict[str, int]
) -> None:
    page = new_member(household, browser, viewport)
    width = viewport["width"]
    email = f"cy.{width}@example.org"
    question = f"Write to {email} or call +49 30 7654321 about the {width} px cross-check."
    leaving = f"Write to [EMAIL_1] or call [PHONE_1] about the {width} px cross-check."
    form = local_answer(page, question)
    expect(form.locator(f"input[value='{OUTSIDE}']")).to_be_checked()  # the stronger model
    form.locator(f"input[value='{TRUSTED}']").check()
    ask = form.get_by_role("button", name="Ask 3 models · up to 20 sat")
    reached, recorded, trusted_asked = (
        household.reached(),
        egress_count(household.node),
        len(household.lan.requests),
    )

    ask.click()

    shown = panel(page)
    expect(shown.locator("#leaving-to")).to_have_text(
        "Cross-check: it asks 2 outside models, each in a request of its own."
    )
    expect(shown.locator("#leaving-found")).to_have_text(
        "1 e-mail address, 1 phone number replaced by placeholders (highlighted) for the "
        "providers not trusted. The answers come back with them put back."
    )
    models = shown.locator(".leaving-models li")
    expect(models.locator("span")).to_have_text(
        [f"To aperture · {OUTSIDE} · up to 20 sat", f"To lan · {TRUSTED} · free"]
    )
    expect(models.locator("small")).to_have_text(
        ["Private values replaced by placeholders.", "Trusted provider: sent as written."]
    )
    sent = shown.locator(".leaving-sent")
    expect(sent.locator("h3")).to_have_text([f"Sent to {OUTSIDE}", f"Sent to {TRUSTED}"])
    expect(sent.locator(".leaving-text")).to_have_text([leaving, question])
    expect(sent.nth(0).locator("mark")).to_have_text(["[EMAIL_1]", "[PHONE_1]"])
    expect(sent.nth(1).locator("mark")).to_have_count(0)
    expect(shown.get_by_role("button", name="Send")).to_be_focused()
    audit_page(page, "chat-crosscheck-preview")
    page.emulate_media(color_scheme="dark")
    audit_page(page, "chat-crosscheck-preview-dark")
    shown.get_by_role("button", name="Cancel").click()

    expect(shown).to_be_hidden()
    expect(form).to_be_visible()
    expect(ask).to_be_enabled()
    expect(form.locator("input:checked")).to_have_count(3)
    expect(page.locator(".crosscheck-progress")).to_have_count(0)
    assert household.reached() == reached  # nothing was sent, so nothing was paid
    assert len(household.lan.requests) == trusted_asked
    assert egress_count(household.node) == recorded

    ask.click()
    expect(shown.locator(".leaving-text").first).to_have_text(leaving)
    shown.get_by_role("button", name="Send").click()

    result = page.locator(".crosscheck-result")
    expect(result.locator(".checked h3")).to_have_text(
        ["smollm2-135m-instruct", OUTSIDE, TRUSTED], timeout=120_000
    )
    expect(result.locator(".checked").nth(1)).to_contain_text(f"l402 answers: {question}")
    assert household.aperture.requests[-1]["messages"] == [{"role": "user", "content": leaving}]
    assert email not in json.dumps(household.aperture.requests)
    assert household.lan.requests[-1]["messages"] == [{"role": "user", "content": question}]
    assert egress_count(household.node) == recorded + 2


def test_a_cross_check_with_a_seed_phrase_is_stopped_with_only_cancel(
    household: Household, browser: Browser
) -> None:
    page = new_member(household, browser, DESKTOP)
    form = local_answer(page, f"Is this a seed phrase? {SEED_12}")
    reached = household.reached()

    form.get_by_role("button", name="Ask 2 models · up to 20 sat").click()

    shown = panel(page)
    expect(shown.locator(".leaving-stop")).to_have_text(
        "Not sent: the message contains a wallet seed phrase (BIP-39 words). "
        "Remove it and send again."
    )
    expect(shown.get_by_role("button")).to_have_text(["Cancel"])
    audit_page(page, "chat-crosscheck-preview-stopped")
    page.keyboard.press("Escape")

    expect(shown).to_be_hidden()
    expect(form).to_be_visible()
    assert household.reached() == reached


def test_a_cross_check_model_over_the_allowance_is_shown_with_nothing_going_to_it(
    household: Household, browser: Browser
) -> None:
    page = new_member(household, browser, PHONE)
    npub = page.npub  # type: ignore[attr-defined]
    shell(
        household.node,
        "from apps.wallet import budgets\n"
        f"member = Member.objects.get(pubkey=parse_pubkey({npub!r}))\n"
        f"budgets.budget_set('member', 'day', {PRICE_MSAT - 1}, member=member)",
    )
    form = local_answer(page, "Write to dee@example.org, please.")
    form.locator(f"input[value='{TRUSTED}']").check()
    reached = household.reached()

    form.get_by_role("button", name="Ask 3 models · up to 20 sat").click()

    models = panel(page).locator(".leaving-models li")
    expect(models.locator("span")).to_have_text([OUTSIDE, f"To lan · {TRUSTED} · free"])
    expect(models.first.locator("small")).to_have_text(
        re.compile(r"^Nothing goes to it\. This model costs up to 20 sat a question")
    )
    expect(panel(page).locator(".leaving-sent h3")).to_have_text([f"Sent to {TRUSTED}"])
    expect(panel(page).locator("#leaving-found")).to_have_text("Trusted provider: sent as written.")
    audit_page(page, "chat-crosscheck-preview-refused")
    panel(page).get_by_role("button", name="Cancel").click()
    assert household.reached() == reached
