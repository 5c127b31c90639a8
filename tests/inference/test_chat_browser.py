"""The dashboard's chat in Chromium against a real node: web server, engine and the SmolLM2 file."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, Page, Route, expect

from apps.inference.markdown import render_markdown
from tests.browser import install_nostr_extension
from tests.instances import Instance, wait_for

pytestmark = [pytest.mark.processes, pytest.mark.browser]
HOSTILE = '<script>window.pwned = 1</script> and <img src=x onerror="window.pwned = 1">'


@pytest.fixture
def member_page(node: Instance, browser: Browser) -> Page:
    """A household member, logged in with a NIP-07 extension, on the chat page."""
    member = Keys.generate()
    assert node.manage("member", "add", member.public_key().to_bech32()).returncode == 0
    page = browser.new_context().new_page()
    install_nostr_extension(page, member)
    page.goto(f"{node.url}/")
    page.get_by_role("button", name="Log in with my Nostr extension").click()
    expect(page).to_have_url(f"{node.url}/chat/")
    page.member_npub = member.public_key().to_bech32()  # type: ignore[attr-defined]
    return page


def send(page: Page, question: str) -> None:
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


def count_stored(node: Instance) -> list[int]:
    code = ("from apps.inference.models import ChatMessage, Conversation;"
            "print(Conversation.objects.count(), ChatMessage.objects.count())")  # fmt: skip
    return [int(n) for n in node.manage("shell", "-c", code).stdout.split()[-2:]]


def files_holding(directory: Path, text: str) -> list[str]:
    needle = text.encode()
    return [str(p.name) for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_member_chats_and_the_answer_says_which_file_made_it(
    node: Instance, member_page: Page
) -> None:
    question = f"What is the capital of France? ({uuid.uuid4().hex[:8]})"
    sha256 = node.manage("models", "list").stdout.split("\t")[-1].strip()

    send(member_page, question)

    answer = member_page.locator(".answer").last
    expect(answer.locator(".provenance")).to_contain_text(
        f"smollm2-135m-instruct · sha256 {sha256[:12]}", timeout=60_000
    )
    expect(answer.locator(".provenance")).to_contain_text(re.compile(r"seed \d+"))
    assert answer.locator(".markdown").inner_text().strip()
    expect(member_page).to_have_url(re.compile(r"/chat/\d+/$"))

    member_page.reload()  # the conversation was kept, and is listed
    expect(member_page.locator(".question .bubble")).to_have_text(question)
    expect(member_page.locator("#conversations a[aria-current=page]")).to_contain_text("capital")
    assert not [name for name in files_holding(node.data_dir, question) if name.endswith(".log")]


def stored_answer(node: Instance, conversation_id: str) -> str:
    code = ("from apps.inference.models import ChatMessage;"
            f"m = ChatMessage.objects.filter(conversation_id={conversation_id}, role='assistant')"
            ".last(); print(repr(m.content) if m else 'None')")  # fmt: skip
    return str(node.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def test_stop_ends_the_generation_and_keeps_exactly_what_was_shown(
    node: Instance, member_page: Page
) -> None:
    send(member_page, "Write a very long story about a dragon, in ten chapters.")
    streaming = member_page.locator(".answer .streaming")
    expect(streaming).not_to_be_empty(timeout=60_000)
    # The page is busy for a moment (a slow phone) while the answer goes on arriving, then
    # Stop is pressed before what arrived meanwhile was shown: the server has sent more than
    # the page showed, and must keep only what was shown.
    member_page.evaluate(
        """() => {
            const until = Date.now() + 3000;
            while (Date.now() < until);
            document.getElementById("stop").click();
        }"""
    )

    shown = streaming.text_content() or ""
    expect(member_page.locator(".answer .provenance")).to_have_text("stopped")
    expect(member_page.get_by_role("button", name="Send")).to_be_visible()
    conversation_id = member_page.url.rstrip("/").rsplit("/", 1)[-1]
    wait_for(lambda: stored_answer(node, conversation_id) == repr(shown), 60,
             "the stored answer to be what was shown")  # fmt: skip
    node.wait_until("engine", "up")
    assert re.search(r"\b0 answering", node.component("engine")["detail"])  # type: ignore[index]
    member_page.reload()
    expect(member_page.locator(".answer .provenance")).to_contain_text("stopped")
    assert member_page.locator(".answer .markdown").inner_text().strip()


def test_a_private_chat_stores_nothing_anywhere(node: Instance, member_page: Page) -> None:
    before = count_stored(node)
    marker = f"zebracorn-{uuid.uuid4().hex}"
    member_page.get_by_role("link", name="Private chat").click()
    expect(member_page.get_by_text("nothing is stored on the node")).to_be_visible()

    send(member_page, f"Please remember the word {marker}.")
    expect(member_page.locator(".answer .provenance")).to_contain_text("sha256", timeout=60_000)
    send(member_page, "Which word did I ask you to remember?")
    expect(member_page.locator(".answer .provenance").nth(1)).to_contain_text(
        "sha256", timeout=60_000
    )

    assert count_stored(node) == before
    assert files_holding(node.data_dir, marker) == []
    expect(member_page).to_have_url(f"{node.url}/chat/private/")


def pwned(page: Page) -> bool:
    return bool(page.evaluate("() => window.pwned === 1"))


def test_an_answer_holding_html_shows_it_as_text_and_runs_nothing(
    node: Instance, member_page: Page
) -> None:
    npub = member_page.member_npub  # type: ignore[attr-defined]
    code = f"""
from apps.identity.models import Member
from apps.identity.services import parse_pubkey
from apps.inference import conversations
member = Member.objects.get(pubkey=parse_pubkey({npub!r}))
conversation = conversations.conversation_start(member, "Say something hostile")
conversations.question_save(conversation, {HOSTILE!r})
provenance = {{"model": "m", "model_sha256": "0" * 64, "sampling": {{}}}}
conversations.answer_save(conversation, {HOSTILE!r}, provenance, "stop")
print(conversation.pk)
"""
    conversation_id = node.manage("shell", "-c", code).stdout.split()[-1]
    dialogs: list[str] = []
    member_page.on("dialog", lambda dialog: dialogs.append(dialog.message))

    member_page.goto(f"{node.url}/chat/{conversation_id}/")

    expect(member_page.locator(".answer .markdown")).to_have_text(HOSTILE)
    expect(member_page.locator(".question .bubble")).to_have_text(HOSTILE)
    assert member_page.locator("#transcript img, #transcript script").count() == 0
    assert not pwned(member_page) and not dialogs


def test_a_streamed_answer_holding_html_runs_nothing(node: Instance, member_page: Page) -> None:
    """The answer's words as the engine would stream them, and the server's rendering of them."""
    tokens = [HOSTILE[i : i + 7] for i in range(0, len(HOSTILE), 7)]
    done = {"event": "done", "finish_reason": "stop", "html": render_markdown(HOSTILE),
            "provenance": {"model": "m", "model_sha256": "0" * 64,
                           "sampling": {"temperature": 0.7, "top_p": 0.95, "seed": 1,
                                        "max_tokens": 9}}}  # fmt: skip
    lines = [{"event": "token", "text": token} for token in tokens] + [done]
    body = "".join(json.dumps(line) + "\n" for line in lines)

    def answer(route: Route) -> None:
        route.fulfill(status=200, content_type="application/x-ndjson", body=body)

    member_page.goto(f"{node.url}/chat/private/")
    member_page.route("**/chat/ask", answer)
    send(member_page, "Say something hostile")

    expect(member_page.locator(".answer .markdown")).to_have_text(HOSTILE)
    assert member_page.locator("#transcript img, #transcript script").count() == 0
    assert not pwned(member_page)


CODE = 'if (a < b && c > d) {\n  <script>window.pwned = 1; alert("a4")</script>\n}'
CODE_ANSWER = f"Here:\n\n```js\n{CODE}\n```\n\nInline: `if (a < b && c > d)` and `<script>`"


def expect_code_as_written(page: Page) -> None:
    markdown = page.locator(".answer .markdown").last
    expect(markdown.locator("pre code")).to_have_text(CODE + "\n")
    expect(markdown.locator("p code").first).to_have_text("if (a < b && c > d)")
    expect(markdown.locator("p code").nth(1)).to_have_text("<script>")
    assert page.locator("#transcript script").count() == 0


def test_code_in_an_answer_reads_as_written_once_the_final_html_replaces_the_stream(
    node: Instance, member_page: Page
) -> None:
    tokens = [CODE_ANSWER[i : i + 5] for i in range(0, len(CODE_ANSWER), 5)]
    done = {"event": "done", "finish_reason": "stop", "html": render_markdown(CODE_ANSWER),
            "provenance": {"model": "m", "model_sha256": "0" * 64,
                           "sampling": {"temperature": 0.7, "top_p": 0.95, "seed": 1,
                                        "max_tokens": 9}}}  # fmt: skip
    lines = [{"event": "token", "text": token} for token in tokens] + [done]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    dialogs: list[str] = []
    member_page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    member_page.goto(f"{node.url}/chat/private/")
    member_page.route(
        "**/chat/ask", lambda route: route.fulfill(status=200, body=body, content_type="text/plain")
    )

    send(member_page, "Show me some code")

    expect(member_page.locator(".answer .provenance")).to_contain_text("sha256")
    expect_code_as_written(member_page)
    assert not pwned(member_page) and not dialogs


def test_code_in_a_stored_answer_reads_as_written(node: Instance, member_page: Page) -> None:
    npub = member_page.member_npub  # type: ignore[attr-defined]
    code = f"""
from apps.identity.models import Member
from apps.identity.services import parse_pubkey
from apps.inference import conversations
member = Member.objects.get(pubkey=parse_pubkey({npub!r}))
conversation = conversations.conversation_start(member, "Show me some code")
conversations.question_save(conversation, "Show me some code")
provenance = {{"model": "m", "model_sha256": "0" * 64, "sampling": {{}}}}
conversations.answer_save(conversation, {CODE_ANSWER!r}, provenance, "stop")
print(conversation.pk)
"""
    conversation_id = node.manage("shell", "-c", code).stdout.split()[-1]

    member_page.goto(f"{node.url}/chat/{conversation_id}/")

    expect_code_as_written(member_page)
    assert not pwned(member_page)


def test_an_answer_that_did_not_see_the_oldest_messages_says_so(
    node: Instance, member_page: Page
) -> None:
    """As the chat streams it when the engine left messages out, the note after the answer."""
    note = "The 6 oldest messages no longer fit the model's context; this answer did not see them."
    done = {"event": "done", "finish_reason": "stop", "html": render_markdown("Four."),
            "context_note": note,
            "provenance": {"model": "m", "model_sha256": "0" * 64,
                           "sampling": {"temperature": 0.7, "top_p": 0.95, "seed": 1,
                                        "max_tokens": 9}}}  # fmt: skip
    lines = [{"event": "token", "text": "Four."}, done, {"event": "summary", "covers": 6}]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    member_page.route(
        "**/chat/ask", lambda route: route.fulfill(status=200, body=body, content_type="text/plain")
    )

    send(member_page, "What is 2+2?")

    answer = member_page.locator(".answer").last
    expect(answer.locator(".context-note")).to_have_text(note)
    expect(answer.locator(".markdown")).to_have_text("Four.")
    expect(member_page.get_by_role("button", name="Send")).to_be_visible()
