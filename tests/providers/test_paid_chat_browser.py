"""The chat with an outside model in Chromium, against a real node: a member picks an outside
model, sees its price and what leaves the node, asks, and gets the answer naming the provider;
the owner then finds the egress record. A local answer is asked again of the outside model in
one click, and cross-checked against it, side by side. Each page is audited (sideways
scrolling, axe-core, CSP) and photographed into build/screenshots at 390 and 1280 px."""

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
from tests.instances import Instance
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = [pytest.mark.processes, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
SIZES = [pytest.param(PHONE, id="phone"), pytest.param(DESKTOP, id="desktop")]
ANSWER_TOKENS = 24  # the local model's answers: short, the flows matter here
OUTSIDE = "lan/strong-1"


@dataclass
class Household:
    node: Instance
    owner: Keys
    provider: OpenAIShapedDouble


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    """A claimed node with the engine, and a provider on the home network added to it."""
    owner = Keys.generate()
    node = Instance(tmp_path_factory.mktemp("node"))
    node.run("web", "engine")
    with OpenAIShapedDouble() as provider:
        node.wait_until("engine", "up", timeout=120)
        node.claim(owner)
        shell(node, f"services.provider_add({provider.url!r}, kind='openai', name='lan')")
        yield Household(node, owner, provider)
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
    return page


def egress_of(node: Instance, question: str) -> dict[str, Any]:
    """The egress record of the request that carried this question (through the service's
    model: the egress page is the owner's view of the same rows)."""
    code = (
        f"row = next(e for e in Egress.objects.all() if {question!r} in e.body)\n"
        "import json; print(json.dumps({'provider': row.provider, 'model': row.model, "
        "'outcome': row.outcome, 'cost_msat': row.cost_msat, 'origin': row.origin, "
        "'body': json.loads(row.body)}))"
    )
    return dict(json.loads(shell(node, code)))


def send(page: Page, question: str) -> None:
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


@pytest.mark.parametrize("viewport", SIZES)
def test_a_member_picks_an_outside_model_sees_what_leaves_and_gets_an_answer_naming_it(
    household: Household, browser: Browser, viewport: dict[str, int]
) -> None:
    page = new_member(household, browser, viewport)
    width = viewport["width"]
    picker = page.locator("select[name=model]")
    outside = picker.locator("optgroup[label='Outside (paid per question)'] option")
    expect(outside).to_have_text([f"{OUTSIDE} · free", "lan/strong-2 · free"])
    expect(page.locator("#egress-note")).to_be_hidden()  # the local model is chosen

    picker.select_option(OUTSIDE)

    note = page.locator("#egress-note")
    expect(note).to_have_text(
        "Leaves this node: your question and the conversation so far go to lan. No charge."
    )
    expect(page.get_by_label("Question")).to_have_attribute("placeholder", f"Ask {OUTSIDE}…")
    audit_page(page, "chat-outside-picker")
    question = f"Which provider are you, at {width} px?"
    send(page, question)

    answer = page.locator(".answer").last
    expect(answer.locator(".markdown")).to_have_text(f"double answers: {question}")
    expect(answer.locator(".provenance summary")).to_have_text(f"{OUTSIDE} · lan · 0 sat")
    answer.locator(".provenance summary").click()
    expect(answer.locator(".provenance p")).to_contain_text(
        f"Answered outside this node by lan · {OUTSIDE} · cost 0 sat"
    )
    expect(answer.get_by_role("button", name=re.compile("^Ask "))).to_have_count(0)
    audit_page(page, "chat-outside-answer")
    page.reload()
    expect(page.locator(".answer .provenance summary")).to_have_text(f"{OUTSIDE} · lan · 0 sat")
    expect(picker).not_to_have_value(OUTSIDE)  # a page opens on the node's own model

    record = egress_of(household.node, question)
    assert (record["provider"], record["model"], record["origin"]) == ("lan", OUTSIDE, "chat")
    assert record["body"]["messages"][-1] == {"role": "user", "content": question}


@pytest.mark.parametrize("viewport", SIZES)
def test_a_local_answer_is_asked_of_a_stronger_model_and_cross_checked_side_by_side(
    household: Household, browser: Browser, viewport: dict[str, int]
) -> None:
    page = new_member(household, browser, viewport)
    send(page, "Name a colour.")
    answer = page.locator(".answer").last
    expect(answer.locator(".provenance")).to_contain_text("sha256", timeout=90_000)
    audit_page(page, "chat-ask-stronger")

    answer.get_by_role("button", name=f"Ask {OUTSIDE} (free)").click()

    answer = page.locator(".answer").last
    expect(answer.locator(".provenance summary")).to_have_text(f"{OUTSIDE} · lan · 0 sat")
    expect(page.locator(".answer")).to_have_count(1)  # asked again, in the local one's place
    answer.get_by_role("button", name="Cross-check").click()
    form = page.locator(".crosscheck-form")
    expect(form.get_by_role("checkbox", name=re.compile("strong-1"))).to_be_checked()
    form.get_by_role("checkbox", name=re.compile("smollm2")).check()
    expect(form.get_by_role("button", name="Ask 2 models")).to_be_enabled()
    audit_page(page, "chat-crosscheck-form")
    form.get_by_role("button", name="Ask 2 models").click()

    result = page.locator(".crosscheck-result")
    expect(result.get_by_role("heading", name="Cross-check · not kept")).to_be_visible(
        timeout=120_000
    )
    checked = result.locator(".checked")
    expect(checked).to_have_count(2)
    expect(checked.locator("h3")).to_have_text(["smollm2-135m-instruct", OUTSIDE])
    expect(checked.locator(".who")).to_have_text(["on this node · free", "by lan · 0 sat"])
    expect(result.locator(".crosscheck-note")).to_contain_text("Where they agree and differ")
    first, second = (checked.nth(n).bounding_box() or {} for n in (0, 1))
    if viewport == PHONE:
        assert second["y"] > first["y"]  # stacked
    else:
        assert second["y"] == first["y"]  # side by side
    audit_page(page, "chat-crosscheck")
    send(page, "Thanks.")  # a new question puts the cross-check away
    expect(result).to_have_count(0)
