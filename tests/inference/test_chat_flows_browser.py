"""The chat's everyday flows in Chromium, on a phone and on a desktop, against a real node:
a new chat and its title, the list as a drawer, rename, search, copy, answer again, edit, stop,
a system prompt, delete with undo, and the dark theme. Each page is audited (sideways
scrolling, axe-core) and photographed into build/screenshots."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser import audit_page, install_nostr_extension
from tests.inference.test_chat_browser import CODE
from tests.instances import Instance, wait_for

pytestmark = [pytest.mark.processes, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
ANSWER_TOKENS = 40  # short answers: the flows matter here, not what the model says


@pytest.fixture
def member_at(node: Instance, browser: Browser) -> Callable[..., Page]:
    """A new household member logged in on the chat page, in a window of the given size."""

    def log_in(viewport: dict[str, int], **context: Any) -> Page:
        keys = Keys.generate()
        npub = keys.public_key().to_bech32()
        assert node.manage("member", "add", npub).returncode == 0
        shell(node, npub, f"chat_settings.defaults_set(member, {{'temperature': 0.7, "
                          f"'top_p': 0.95, 'max_tokens': {ANSWER_TOKENS}}})")  # fmt: skip
        page = browser.new_context(viewport=viewport, **context).new_page()  # type: ignore[arg-type]
        install_nostr_extension(page, keys)
        page.goto(f"{node.url}/login/")
        page.get_by_role("button", name="Log in with my Nostr extension").click()
        page.wait_for_url(re.compile(r"/(chat|start)/"))
        page.goto(f"{node.url}/chat/")
        page.npub = npub  # type: ignore[attr-defined]
        return page

    return log_in


def shell(node: Instance, npub: str, code: str) -> str:
    """Run Python in the node with `member` bound to the member of this npub; its last line."""
    script = (
        "from apps.identity.models import Member\n"
        "from apps.identity.services import parse_pubkey\n"
        "from apps.inference import chat_settings, conversations\n"
        "from apps.inference.models import ChatMessage, Conversation\n"
        f"member = Member.objects.get(pubkey=parse_pubkey({npub!r}))\n{code}\n"
    )
    result = node.manage("shell", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def stored_conversation(node: Instance, page: Page, question: str, answer: str) -> str:
    code = (
        f"c = conversations.conversation_start(member, {question!r})\n"
        f"conversations.question_save(c, {question!r})\n"
        "p = {'model': 'smollm2-135m-instruct', 'model_sha256': '0' * 64, 'sampling': {}}\n"
        f"conversations.answer_save(c, {answer!r}, p, 'stop')\nprint(c.pk)"
    )
    return shell(node, page.npub, code)  # type: ignore[attr-defined]


def send(page: Page, question: str) -> None:
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


def answered(page: Page, nth: int = -1) -> None:
    answers = page.locator(".answer")
    answer = answers.last if nth == -1 else answers.nth(nth)
    expect(answer.locator(".provenance")).to_contain_text("sha256", timeout=90_000)


def messages_of(node: Instance, page: Page) -> list[str]:
    conversation = page.url.rstrip("/").rsplit("/", 1)[-1]
    code = f"print([m.role for m in ChatMessage.objects.filter(conversation_id={conversation})])"
    return list(eval(shell(node, page.npub, code)))  # type: ignore[attr-defined]  # noqa: S307


def test_a_new_chat_on_a_phone_starts_from_an_example_and_the_model_names_it(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(PHONE)
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()
    audit_page(page, "chat-new")
    example = page.locator(".examples .example").nth(3)  # one the test model names well
    question = example.inner_text()

    example.click()

    answered(page)
    expect(page).to_have_url(re.compile(r"/chat/\d+/$"))
    expect(page.locator(".question .bubble")).to_have_text(question)
    conversation = page.url.rstrip("/").rsplit("/", 1)[-1]
    code = f"c = Conversation.objects.get(pk={conversation}); print(c.title_source, '|', c.title)"
    named = wait_for(lambda: (line := shell(node, page.npub, code)).startswith("model") and line,  # type: ignore[attr-defined]
                     90, "the model to name the conversation")  # fmt: skip
    title = named.split("|", 1)[1].strip()
    expect(page.locator("#chat-title")).to_have_text(title)
    audit_page(page, "chat-conversation")


def test_on_a_phone_the_conversation_list_is_a_drawer(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(PHONE)
    stored_conversation(node, page, "Drawer question", "Drawer answer")
    page.reload()
    link = page.get_by_role("link", name="Drawer question")
    expect(link).to_be_hidden()

    page.get_by_role("button", name="Conversations").click()

    expect(link).to_be_visible()
    drawer = page.locator("#chat-list")
    wait_for(lambda: (drawer.bounding_box() or {"x": -1})["x"] >= 0, 5, "the drawer to slide in")
    audit_page(page, "chat-drawer")
    page.keyboard.press("Escape")
    expect(link).to_be_hidden()
    page.get_by_role("button", name="Conversations").click()
    link.click()
    expect(page.locator(".question .bubble")).to_have_text("Drawer question")


def test_a_member_renames_and_searches_conversations(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(DESKTOP)
    word = f"quokka{uuid.uuid4().hex[:6]}"
    first = stored_conversation(node, page, "Plans for the garden", f"Plant a {word} tree.")
    stored_conversation(node, page, "Cheap flights", "Book early.")
    page.goto(f"{node.url}/chat/{first}/")

    page.get_by_label("Rename or delete this conversation").click()
    page.get_by_label("Conversation name").fill("Garden, spring")
    page.get_by_role("button", name="Rename").click()

    expect(page.locator("#chat-title")).to_have_text("Garden, spring")
    expect(page.locator("#conversations")).to_contain_text("Garden, spring")
    page.get_by_label("Search my conversations").fill(word)
    page.get_by_label("Search my conversations").press("Enter")
    expect(page.locator("#conversations li")).to_have_count(1)
    expect(page.locator("#conversations")).to_contain_text("Garden, spring")
    audit_page(page, "chat-search")


def test_copy_buttons_copy_an_answer_as_written_and_each_code_block(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(DESKTOP, permissions=["clipboard-read", "clipboard-write"])
    answer = f"Here is the code:\n\n```python\n{CODE}\n```\n\nDone."
    conversation = stored_conversation(node, page, "Code please", answer)
    page.goto(f"{node.url}/chat/{conversation}/")
    code_block = page.locator(".answer .code-block")
    expect(code_block.locator(".code-bar")).to_contain_text("python")
    assert page.locator(".answer pre code span[class^='tok-']").count() > 0  # highlighted

    code_block.get_by_role("button", name="Copy code").click()

    expect(code_block.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == CODE + "\n"
    page.locator(".answer .actions").get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == answer
    audit_page(page, "chat-code")


def test_an_answer_is_made_again_and_a_question_edited_and_resent(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(DESKTOP)
    send(page, "Name a colour.")
    answered(page)
    seed = page.locator(".answer .provenance").inner_text()

    page.get_by_role("button", name="Regenerate").click()

    expect(page.locator(".answer")).to_have_count(1)
    answered(page)
    expect(page.locator(".answer .provenance")).not_to_have_text(seed)
    assert messages_of(node, page) == ["user", "assistant"]

    page.locator(".question").hover()
    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited question").fill("Name a fruit.")
    page.get_by_label("Edited question").press("Enter")

    answered(page)
    expect(page.locator(".question .bubble")).to_have_text("Name a fruit.")
    expect(page.locator(".answer")).to_have_count(1)
    assert messages_of(node, page) == ["user", "assistant"]
    page.reload()
    expect(page.locator(".question .bubble")).to_have_text("Name a fruit.")


def test_escape_stops_an_answer(node: Instance, member_at: Callable[..., Page]) -> None:
    page = member_at(DESKTOP)
    page.locator("#chat-settings summary").click()
    page.get_by_label("Longest answer (tokens)").fill("2000")
    send(page, "Write a very long story about a dragon, in ten chapters.")
    expect(page.locator(".answer .streaming")).not_to_be_empty(timeout=60_000)

    page.keyboard.press("Escape")

    expect(page.locator(".answer > p.provenance")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_a_system_prompt_and_sampling_stay_with_their_conversation(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(PHONE)
    page.locator("#chat-settings summary").click()
    page.get_by_label("System prompt").fill("You answer like a pirate.")
    page.get_by_label("Temperature").fill("0.3")

    send(page, "Hello!")

    answered(page)
    expect(page.locator(".answer .provenance")).to_contain_text("temperature 0.3")
    conversation = page.url.rstrip("/").rsplit("/", 1)[-1]
    code = (
        f"c = Conversation.objects.get(pk={conversation})\n"
        "print(repr((c.system_prompt, c.temperature)))"
    )
    assert shell(node, page.npub, code) == "('You answer like a pirate.', 0.3)"  # type: ignore[attr-defined]
    page.reload()
    expect(page.get_by_label("System prompt")).to_have_value("You answer like a pirate.")
    page.goto(f"{node.url}/chat/")  # a new chat starts from the member's defaults
    expect(page.get_by_label("System prompt")).to_have_value("")


def test_deleting_asks_first_and_can_be_undone(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(PHONE)
    conversation = stored_conversation(node, page, "To be deleted", "Soon gone")
    page.goto(f"{node.url}/chat/{conversation}/")

    page.get_by_label("Rename or delete this conversation").click()
    page.get_by_role("button", name="Delete this conversation").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("To be deleted")
    dialog.get_by_role("button", name="Delete").click()

    expect(page).to_have_url(f"{node.url}/chat/")
    expect(page.locator("#undo")).to_contain_text("To be deleted")
    expect(page.locator("#conversations")).not_to_contain_text("To be deleted")
    audit_page(page, "chat-undo")
    page.get_by_role("button", name="Undo").click()
    expect(page).to_have_url(f"{node.url}/chat/{conversation}/")
    expect(page.locator(".question .bubble")).to_have_text("To be deleted")


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_chat_in_the_dark_theme(
    node: Instance, member_at: Callable[..., Page], viewport: dict[str, int]
) -> None:
    page = member_at(viewport, color_scheme="dark")
    conversation = stored_conversation(node, page, "Dark?", f"Yes.\n\n```python\n{CODE}\n```")
    page.goto(f"{node.url}/chat/{conversation}/")

    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(n) for n in re.findall(r"\d+", background)[:3])
    assert red + green + blue < 3 * 80, background
    audit_page(page, "chat-dark")
    page.goto(f"{node.url}/chat/private/")
    audit_page(page, "chat-private-dark")


def canned(text: str) -> str:
    """An answer as the chat streams it, for pages whose requests the test answers itself."""
    done = {"event": "done", "finish_reason": "stop", "html": f"<p>{text}</p>",
            "provenance": {"model": "m", "model_sha256": "0" * 64,
                           "sampling": {"temperature": 0.7, "top_p": 0.95, "seed": 1,
                                        "max_tokens": 9}}}  # fmt: skip
    return "".join(json.dumps(line) + "\n" for line in ({"event": "token", "text": text}, done))


def test_a_refused_edit_puts_the_conversation_back_as_it_was(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(DESKTOP)
    conversation = stored_conversation(node, page, "Original question", "Original answer")
    page.goto(f"{node.url}/chat/{conversation}/")
    busy = json.dumps({"error": "The model is busy answering others; try again in a moment."})
    page.route("**/chat/ask", lambda route: route.fulfill(status=503, body=busy))

    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited question").fill("Changed question")
    page.get_by_label("Edited question").press("Enter")

    expect(page.locator("#ask-error")).to_contain_text("busy")
    expect(page.locator(".question .bubble")).to_have_text("Original question")
    expect(page.locator(".answer .markdown")).to_have_text("Original answer")
    expect(page.get_by_label("Question")).to_have_value("Changed question")
    assert messages_of(node, page) == ["user", "assistant"]


def test_in_a_private_chat_an_edit_and_an_answer_made_again_change_what_the_model_reads(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(DESKTOP)
    page.goto(f"{node.url}/chat/private/")
    sent: list[dict[str, Any]] = []

    def answer(route: Route) -> None:
        sent.append(route.request.post_data_json)
        route.fulfill(status=200, content_type="application/x-ndjson", body=canned(f"A{len(sent)}"))

    page.route("**/chat/ask", answer)
    for question in ("Q1", "Q2"):
        send(page, question)
        expect(page.locator(".answer")).to_have_count(len(sent))
        expect(page.locator(".answer").last.locator(".provenance")).to_contain_text("sha256")

    page.locator(".question").first.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited question").fill("Q1 edited")
    page.get_by_label("Edited question").press("Enter")
    expect(page.locator(".answer .markdown")).to_have_text(["A3"])
    page.get_by_role("button", name="Regenerate").click()
    expect(page.locator(".answer .markdown")).to_have_text(["A4"])
    send(page, "Q3")
    expect(page.locator(".answer .markdown")).to_have_text(["A4", "A5"])

    assert [(body["question"], body["history"]) for body in sent[2:]] == [
        ("Q1 edited", []),
        ("Q1 edited", []),
        ("Q3", [{"role": "user", "content": "Q1 edited"}, {"role": "assistant", "content": "A4"}]),
    ]


def test_the_drawer_says_it_is_open_and_gives_focus_back(
    node: Instance, member_at: Callable[..., Page]
) -> None:
    page = member_at(PHONE)
    opener = page.get_by_role("button", name="Conversations")

    opener.click()
    expect(opener).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_label("Search my conversations")).to_be_focused()
    page.keyboard.press("Escape")

    expect(opener).to_have_attribute("aria-expanded", "false")
    expect(opener).to_be_focused()
    assert page.evaluate("document.body.getAttribute('aria-expanded')") is None


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_chat_settings_save_defaults_that_a_new_chat_starts_from(
    node: Instance, member_at: Callable[..., Page], viewport: dict[str, int]
) -> None:
    page = member_at(viewport)
    page.goto(f"{node.url}/chat/settings/")

    page.get_by_label("System prompt").fill("Answer in one sentence.")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status")).to_contain_text("Saved.")
    audit_page(page, "chat-settings")
    page.goto(f"{node.url}/chat/")
    expect(page.get_by_label("System prompt")).to_have_value("Answer in one sentence.")
