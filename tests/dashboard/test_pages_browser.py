"""Every dashboard page in Chromium against a real node, on a phone and on a desktop, in both
themes: nothing scrolls sideways, axe finds nothing serious, and the shell's controls work."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from nostr_sdk import Keys
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser import audit_page, install_nostr_extension, watch_content_security_policy
from tests.instances import Instance

pytestmark = [pytest.mark.processes, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
PEOPLE = {name: Keys.generate() for name in ("owner", "member", "friend")}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.serve_web()
    instance.claim(PEOPLE["owner"])
    for role in ("member", "friend"):
        npub = PEOPLE[role].public_key().to_bech32()
        assert instance.manage("member", "add", npub, "--role", role).returncode == 0
    yield instance
    instance.stop()


def logged_in(node: Instance, browser: Browser, who: str, theme: str = "") -> Page:
    """A browser of its own for who, logged in with a NIP-07 extension, landed on their home."""
    context: BrowserContext = browser.new_context(viewport=DESKTOP)
    if theme:
        context.add_cookies([{"name": "theme", "value": theme, "url": node.url}])
    page = context.new_page()
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


def audit_pages(page: Page, node: Instance, prefix: str, paths: dict[str, str]) -> None:
    for name, path in paths.items():
        response = page.goto(f"{node.url}{path}")
        assert response is not None
        audit_both_widths(page, f"{prefix}-{name}")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_owners_pages_pass_the_audit(node: Instance, browser: Browser, theme: str) -> None:
    page = logged_in(node, browser, "owner", theme)
    expect(page).to_have_url(f"{node.url}/start/")  # the first-run checklist comes first

    pages = {
        "checklist": "/start/", "system": "/system/", "models": "/models/",
        "wallet": "/wallet/", "people": "/people/", "logout": "/logout/", "404": "/nowhere/",
    }  # fmt: skip
    audit_pages(page, node, f"owner-{theme}", pages)

    page.goto(f"{node.url}/keys/")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Make a key").click()
    expect(page.locator("#new-key")).to_be_visible()
    audit_both_widths(page, f"owner-{theme}-keys")


def test_a_members_pages_pass_the_audit(node: Instance, browser: Browser) -> None:
    page = logged_in(node, browser, "member")
    expect(page).to_have_url(f"{node.url}/chat/")

    pages = {"system": "/system/", "keys": "/keys/", "403": "/people/", "logout": "/logout/"}
    audit_pages(page, node, "member-light", pages)


def test_a_friends_pages_pass_the_audit(node: Instance, browser: Browser) -> None:
    page = logged_in(node, browser, "friend", "dark")
    expect(page).to_have_url(f"{node.url}/shared/")
    expect(page.locator("#nothing-shared")).to_be_visible()

    audit_pages(page, node, "friend-dark", {"shared": "/shared/", "keys": "/keys/"})


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_pages_before_logging_in_pass_the_audit(
    node: Instance, browser: Browser, theme: str
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    context.add_cookies([{"name": "theme", "value": theme, "url": node.url}])
    page = context.new_page()
    watch_content_security_policy(page)

    audit_pages(page, node, f"visitor-{theme}", {"login": "/login/", "404": "/nowhere/"})


def test_the_setup_pages_of_an_unclaimed_node_pass_the_audit(
    make_instance: Callable[..., Instance], page: Page
) -> None:
    fresh = make_instance(SOVEREIGN_SETUP_SECRET="correct horse battery")
    fresh.serve_web()
    watch_content_security_policy(page)

    page.goto(f"{fresh.url}/people/")
    expect(page).to_have_url(f"{fresh.url}/setup/")
    audit_both_widths(page, "visitor-light-setup")
    page.get_by_label("Setup secret").fill("correct horse battery")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("button", name="Claim with my Nostr extension")).to_be_visible()
    audit_both_widths(page, "visitor-light-claim")


def test_the_menu_button_opens_the_navigation_on_a_phone(node: Instance, browser: Browser) -> None:
    page = logged_in(node, browser, "owner")
    page.set_viewport_size(PHONE)
    page.goto(f"{node.url}/system/")
    menu = page.get_by_role("button", name="Menu")
    people = page.get_by_role("link", name="People")

    expect(people).to_be_hidden()
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    page.get_by_text("owner", exact=True).click()  # the person's own menu, inside
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    audit_page(page, "owner-light-menu-open")
    people.click()
    expect(page).to_have_url(f"{node.url}/people/")

    page.set_viewport_size(DESKTOP)  # a desktop shows the navigation without a menu
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    expect(page.get_by_role("link", name="Wallet")).to_be_visible()


def background(page: Page) -> str:
    return str(page.evaluate("() => getComputedStyle(document.body).backgroundColor"))


def test_the_theme_toggle_switches_without_a_reload_and_is_kept(
    node: Instance, browser: Browser
) -> None:
    page = logged_in(node, browser, "member")
    page.emulate_media(color_scheme="light")
    page.goto(f"{node.url}/keys/")
    html, toggle = page.locator("html"), page.get_by_role("button", name="Theme")
    light = background(page)

    toggle.click()  # system → light
    expect(html).to_have_attribute("data-theme", "light")
    toggle.click()  # light → dark
    expect(html).to_have_attribute("data-theme", "dark")
    dark = background(page)
    assert dark != light

    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")
    assert background(page) == dark
    toggle.click()  # dark → the system's again
    expect(html).not_to_have_attribute("data-theme", "dark")
    page.reload()
    assert background(page) == light


def person_row(page: Page, who: str) -> object:
    return page.locator(f'#members tr[data-pubkey="{PEOPLE[who].public_key().to_hex()}"]')


def test_removing_a_person_asks_first(node: Instance, browser: Browser) -> None:
    leaving = Keys.generate()
    assert node.manage("member", "add", leaving.public_key().to_bech32()).returncode == 0
    page = logged_in(node, browser, "owner")
    page.goto(f"{node.url}/people/")
    row = page.locator(f'#members tr[data-pubkey="{leaving.public_key().to_hex()}"]')
    dialog = page.get_by_role("dialog")

    row.get_by_role("button", name="Remove").click()
    expect(dialog).to_contain_text("from the household?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.reload()
    expect(row).to_have_count(1)  # cancelled: still here

    row.get_by_role("button", name="Remove").click()
    dialog.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text("from the household.")
    expect(row).to_have_count(0)


def test_copy_buttons_copy_and_say_so(node: Instance, browser: Browser) -> None:
    page = logged_in(node, browser, "member")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=node.url)
    page.goto(f"{node.url}/keys/")
    copy = page.get_by_role("button", name="Copy base URL")

    copy.click()

    expect(page.locator("[data-copied]")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == f"{node.url}/v1"


def test_copy_works_on_a_plain_http_address_without_the_clipboard_api(
    node: Instance, browser: Browser
) -> None:
    page = logged_in(node, browser, "member")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=node.url)
    # As on a household's LAN address over http, where browsers offer no navigator.clipboard.
    page.add_init_script("Object.defineProperty(window, 'isSecureContext', {value: false})")
    page.goto(f"{node.url}/keys/")

    page.get_by_role("button", name="Copy base URL").click()

    expect(page.locator("[data-copied]")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == f"{node.url}/v1"
