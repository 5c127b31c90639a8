"""The member's chat settings: the page that sets them, and how a conversation follows them."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.forms.models import model_to_dict
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Route

from apps.inference import chat_settings, conversations
from apps.inference.chat_settings import ChatSettings, SettingsError, settings_checked
from apps.inference.models import ChatPreferences, Conversation
from tests.browser import chromium

pytestmark = pytest.mark.django_db

PAGE = "/chat/settings/"
GOOD = {
    "system_prompt": "Answer briefly, in French.",
    "temperature": "0.2",
    "top_p": "0.5",
    "max_tokens": "300",
    "overflow": "summarise",
    "retention_days": "30",
}


def preferences_of(member: Any) -> dict[str, Any]:
    return model_to_dict(ChatPreferences.objects.get(member=member))


@pytest.fixture
def chosen(member: Any) -> dict[str, Any]:
    """The member has chosen settings before; what is stored now."""
    conversations.retention_set(member, 90)
    conversations.overflow_set(member, "leave_out")
    chat_settings.defaults_set(
        member, {"system_prompt": "Be kind.", "temperature": "1.1", "top_p": "0.8"}
    )
    return preferences_of(member)


# The page


def test_the_page_shows_the_members_current_settings(member_client: Client, chosen: Any) -> None:
    page = member_client.get(PAGE)
    html = page.content.decode()

    assert page.status_code == 200
    assert re.search(r'<textarea id="system_prompt"[^>]*>\nBe kind\.</textarea>', html)
    assert re.search(r'<input id="temperature"[^>]*\n\s*value="1.1"', html)
    assert re.search(r'<input id="top_p"[^>]*\n\s*value="0.8"', html)
    assert re.search(r'<input id="max_tokens"[^>]*placeholder="512"[^>]*\n\s*value=""', html)
    assert "Empty: the node's default, 512 tokens." in html
    assert 'value="leave_out" aria-describedby="overflow-leave_out-hint" checked' in html
    assert '<option value="90" selected>90 days</option>' in html
    for legend in ("New conversations", "Long conversations", "Keeping conversations"):
        assert f"<legend>{legend}</legend>" in html


def test_a_member_who_never_chose_sees_the_nodes_defaults(member_client: Client) -> None:
    html = member_client.get(PAGE).content.decode()

    assert re.search(r'<input id="temperature"[^>]*\n\s*value="0.7"', html)
    assert re.search(r'<input id="top_p"[^>]*\n\s*value="0.95"', html)
    assert 'value="leave_out" aria-describedby="overflow-leave_out-hint" checked' in html
    assert '<option value="0" selected>Until I delete them</option>' in html


def test_every_field_has_a_label_and_its_help_text(member_client: Client) -> None:
    html = member_client.get(PAGE).content.decode()
    fields = re.findall(r"<(?:input|textarea|select)\b[^>]*>", html)
    described = [field for field in fields if 'type="hidden"' not in field]

    assert len(described) == 7  # prompt, temperature, top p, tokens, two choices, retention
    for field in described:
        field_id = re.search(r'id="([^"]+)"', field)
        assert field_id is not None, field
        assert f'<label for="{field_id[1]}">' in html
        hints = re.search(r'aria-describedby="([^"]+)"', field)
        assert hints is not None, field
        for hint in hints[1].split():
            assert f'id="{hint}"' in html


def test_the_page_runs_no_inline_script_or_style_and_is_never_cached(
    member_client: Client,
) -> None:
    page = member_client.get(PAGE)
    html = page.content.decode()

    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert "no-store" in page["Cache-Control"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # only the node's own files
    assert " style=" not in html and "<style" not in html
    assert '<link rel="stylesheet" href="/static/css/settings.css">' in html


def test_saving_changes_every_setting_at_once(
    member: Any, member_client: Client, chosen: Any
) -> None:
    response = member_client.post(PAGE, GOOD)

    assert response.status_code == 302
    assert response["Location"] == PAGE
    assert chat_settings.defaults_of(member) == ChatSettings(
        system_prompt="Answer briefly, in French.", temperature=0.2, top_p=0.5, max_tokens=300
    )
    assert conversations.overflow_of(member) == "summarise"
    assert conversations.retention_of(member) == 30


def test_after_saving_the_page_says_saved_and_shows_what_was_saved(
    member_client: Client,
) -> None:
    page = member_client.post(PAGE, GOOD, follow=True)
    html = page.content.decode()

    assert page.redirect_chain == [(PAGE, 302)]
    assert re.search(r'<p class="message success" role="status">Saved.</p>', html)
    assert re.search(r'<input id="max_tokens"[^>]*\n\s*value="300"', html)
    assert "Saved." not in member_client.get(PAGE).content.decode()  # said once


def test_an_empty_longest_answer_goes_back_to_the_nodes_default(
    member: Any, member_client: Client
) -> None:
    member_client.post(PAGE, GOOD)

    member_client.post(PAGE, {**GOOD, "max_tokens": ""})

    assert chat_settings.defaults_of(member).max_tokens is None
    assert chat_settings.defaults_of(member).answer_tokens == settings.ENGINE_DEFAULT_MAX_TOKENS


def test_a_shorter_retention_deletes_the_older_conversations_when_saved(
    member: Any, member_client: Client
) -> None:
    for title, days in {"old": 40, "recent": 10}.items():
        conversation = conversations.conversation_start(member, title)
        updated = timezone.now() - timedelta(days=days)
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=updated)

    member_client.post(PAGE, GOOD)  # keep 30 days

    assert list(Conversation.objects.values_list("title", flat=True)) == ["recent"]


def test_saving_changes_only_the_members_own_settings(
    owner: Any, owner_client: Client, member: Any, chosen: Any
) -> None:
    owner_client.post(PAGE, GOOD)

    assert preferences_of(member) == chosen
    assert chat_settings.defaults_of(owner).system_prompt == "Answer briefly, in French."


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("temperature", "3", "Temperature must be a number from 0 to 2."),
        ("temperature", "nan", "Temperature must be a number from 0 to 2."),
        ("temperature", "x", "Temperature must be a number from 0 to 2."),
        ("temperature", "", "Temperature must be a number from 0 to 2."),
        ("top_p", "1.5", "Top p must be a number from 0 to 1."),
        ("top_p", "-0.1", "Top p must be a number from 0 to 1."),
        ("max_tokens", "0", "The longest answer must be a whole number of tokens from 1 to 32,768"),
        ("max_tokens", "99999999", "a whole number of tokens from 1 to 32,768"),
        ("max_tokens", "abc", "a whole number of tokens from 1 to 32,768"),
        ("max_tokens", "2.5", "a whole number of tokens from 1 to 32,768"),
        ("system_prompt", "x" * 8_001, "The system prompt may be at most 8,000 characters."),
        ("overflow", "forget", "Choose from the list what becomes of the oldest messages."),
        ("retention_days", "3", "Choose from the list how long to keep conversations."),
        ("retention_days", "²", "Choose from the list how long to keep conversations."),
    ],
)
def test_one_bad_field_changes_nothing_at_all_and_says_what_is_wrong(
    member: Any, member_client: Client, chosen: Any, field: str, value: str, says: str
) -> None:
    page = member_client.post(PAGE, {**GOOD, field: value})
    html = page.content.decode()

    assert page.status_code == 400
    assert preferences_of(member) == chosen  # not even the good fields were saved
    assert "Nothing was saved: one setting needs a change." in html
    assert f'<p class="error" id="{field}-error">' in html  # beside the field
    assert f'<li><a href="#{field}">' in html  # and at the top, leading to it
    assert says in html
    assert "Saved." not in html


def test_a_refused_form_keeps_what_was_typed_beside_the_errors(
    member_client: Client, chosen: Any
) -> None:
    typed = {**GOOD, "temperature": "3", "max_tokens": "abc", "system_prompt": "Be <brief>."}

    html = member_client.post(PAGE, typed).content.decode()

    assert "Nothing was saved: 2 settings need a change." in html
    assert re.search(r'<input id="temperature"[^>]*\n\s*value="3" aria-describedby="', html)
    assert 'aria-describedby="temperature-hint temperature-error" aria-invalid="true"' in html
    assert re.search(r'<input id="max_tokens"[^>]*\n\s*value="abc"', html)
    assert ">\nBe &lt;brief&gt;.</textarea>" in html
    assert re.search(r'<input id="top_p"[^>]*\n\s*value="0.5"', html)  # the good ones too
    assert 'value="summarise" aria-describedby="overflow-summarise-hint" checked' in html
    assert '<option value="30" selected>30 days</option>' in html


def test_a_form_missing_its_fields_changes_nothing(
    member: Any, member_client: Client, chosen: Any
) -> None:
    page = member_client.post(PAGE, {})

    assert page.status_code == 400
    assert preferences_of(member) == chosen
    assert "Nothing was saved: 4 settings need a change." in page.content.decode()


def test_a_friend_may_not_see_or_change_chat_settings(friend: Any, friend_client: Client) -> None:
    assert friend_client.get(PAGE).status_code == 403
    assert friend_client.post(PAGE, GOOD).status_code == 403
    assert not ChatPreferences.objects.filter(member=friend).exists()


def test_someone_logged_out_is_sent_to_log_in(member: Any) -> None:
    visitor = Client()

    page = visitor.get(PAGE)
    posted = visitor.post(PAGE, GOOD)

    assert page.status_code == 302
    assert page["Location"] == "/login/?next=/chat/settings/"
    assert posted.status_code == 302
    assert not ChatPreferences.objects.exists()


def test_the_owner_has_chat_settings_too(owner: Any, owner_client: Client) -> None:
    assert owner_client.get(PAGE).status_code == 200
    owner_client.post(PAGE, GOOD)
    assert conversations.retention_of(owner) == 30


@pytest.mark.browser
def test_the_settings_page_does_not_scroll_sideways_on_a_phone(member_client: Client) -> None:
    # Rendered here, shown in Chromium at a phone's width with the real style sheets.
    typed = {**GOOD, "temperature": "3", "system_prompt": "x" * 8_001}
    html = member_client.post(PAGE, typed).content.decode()
    static = Path(settings.BASE_DIR) / "static"

    def serve(route: Route) -> None:
        url = route.request.url
        if url.endswith(PAGE):
            route.fulfill(body=html, content_type="text/html")
        elif "/static/" in url:
            route.fulfill(path=static / url.split("/static/", 1)[1])
        else:
            route.fulfill(status=404)

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.route("http://node.test/**", serve)
        page.goto(f"http://node.test{PAGE}")
        # The page's own content; the header belongs to base.html and its own theme.
        rights = page.evaluate(
            "[...document.querySelectorAll('main, main *')]"
            ".map(element => element.getBoundingClientRect().right)"
        )
        textarea = page.locator("#system_prompt").bounding_box()
        page.close()

    assert len(rights) > 50
    assert max(rights) <= 390
    assert textarea is not None and textarea["width"] > 250  # it is the width of the page


# How a conversation follows the member's defaults


def test_a_conversation_with_nothing_of_its_own_follows_the_defaults_as_they_are_now(
    member: Any,
) -> None:
    conversation = conversations.conversation_start(member, "hi")
    chat_settings.defaults_set(member, {**GOOD, "temperature": "0.3"})

    assert chat_settings.settings_of(conversation, member) == ChatSettings(
        system_prompt="Answer briefly, in French.", temperature=0.3, top_p=0.5, max_tokens=300
    )
    assert chat_settings.settings_of(None, member) == chat_settings.defaults_of(member)


def test_a_conversation_keeps_only_what_differs_from_the_defaults(member: Any) -> None:
    chat_settings.defaults_set(member, GOOD)
    conversation = conversations.conversation_start(member, "hi")
    own = ChatSettings(system_prompt="Be terse.", temperature=0.2, top_p=0.9, max_tokens=None)

    chat_settings.conversation_settings_set(conversation, own)

    conversation.refresh_from_db()
    assert (conversation.system_prompt, conversation.temperature) == ("Be terse.", None)
    assert (conversation.top_p, conversation.max_tokens) == (0.9, None)
    chat_settings.defaults_set(member, {**GOOD, "temperature": "1.5", "max_tokens": "64"})
    # What it set itself stays; the rest follows the defaults as they change.
    assert chat_settings.settings_of(conversation, member) == ChatSettings(
        system_prompt="Be terse.", temperature=1.5, top_p=0.9, max_tokens=64
    )


# The checks, one field at a time


def checked(**fields: Any) -> ChatSettings:
    return settings_checked({"temperature": "0.7", "top_p": "0.95", **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"temperature": "0", "top_p": "0"}, (0.0, 0.0)),
        ({"temperature": "2", "top_p": "1"}, (2.0, 1.0)),
        ({"temperature": " 1.25 ", "top_p": "5e-1"}, (1.25, 0.5)),
        ({"temperature": 1, "top_p": 0.5}, (1.0, 0.5)),  # numbers from JSON
    ],
)
def test_the_ends_of_each_range_are_allowed(fields: dict[str, Any], expected: Any) -> None:
    chosen = checked(**fields)
    assert (chosen.temperature, chosen.top_p) == expected


@pytest.mark.parametrize(
    "temperature", ["inf", "-inf", "1e400", "NaN", "-0.001", "2.0001", True, None, [], "1,5"]
)
def test_a_temperature_out_of_range_or_not_a_number_is_refused(temperature: Any) -> None:
    with pytest.raises(SettingsError, match="Temperature must be a number from 0 to 2"):
        checked(temperature=temperature)


@pytest.mark.parametrize(
    ("max_tokens", "expected"),
    [(None, None), ("", None), ("   ", None), (" 42 ", 42), (1, 1), ("32768", 32_768)],
)
def test_the_longest_answer_is_a_whole_number_or_empty(max_tokens: Any, expected: Any) -> None:
    assert checked(max_tokens=max_tokens).max_tokens == expected


@pytest.mark.parametrize(
    "max_tokens", ["0", "-5", "32769", "1.0", 512.0, True, "²", "٣x", "9" * 5_000, "0x10"]
)
def test_a_longest_answer_that_is_not_a_whole_number_in_range_is_refused(max_tokens: Any) -> None:
    # "²" passes isdigit() and "9"*5000 is over int()'s digit limit: both once raised a
    # ValueError that was not a SettingsError, which a page would have answered with a 500.
    with pytest.raises(SettingsError, match="from 1 to 32,768, or empty"):
        checked(max_tokens=max_tokens)


def test_the_system_prompt_is_trimmed_and_its_line_ends_made_plain() -> None:
    assert checked(system_prompt="  Be brief.\r\nBe kind.\r\n").system_prompt == (
        "Be brief.\nBe kind."
    )
    assert checked(system_prompt=None).system_prompt == ""


def test_the_system_prompt_limit_counts_a_line_end_once() -> None:
    prompt = "x\r\n" * 3_999 + "xx"  # 8,000 characters once its line ends are plain

    assert len(checked(system_prompt=prompt).system_prompt) == 8_000
    with pytest.raises(SettingsError, match="at most 8,000 characters"):
        checked(system_prompt=prompt + "x")


@pytest.mark.parametrize("prompt", [["Be brief."], {"text": "hi"}, 42])
def test_a_system_prompt_that_is_not_text_is_refused(prompt: Any) -> None:
    with pytest.raises(SettingsError, match="system prompt"):
        checked(system_prompt=prompt)


def test_each_bad_field_is_named_with_what_is_wrong() -> None:
    errors = chat_settings.settings_errors(
        {"system_prompt": "x" * 8_001, "temperature": "hot", "top_p": "0.5", "max_tokens": "0"}
    )

    assert set(errors) == {"system_prompt", "temperature", "max_tokens"}
    assert errors["temperature"] == "Temperature must be a number from 0 to 2."
    assert chat_settings.settings_errors(GOOD) == {}
