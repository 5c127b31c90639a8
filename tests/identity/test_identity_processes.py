"""Identity against a running node: claiming it in Chromium, and an API key in the OpenAI client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.cookiejar
import json
import urllib.error
import urllib.request
from collections.abc import Callable

import openai
import pytest
import websockets
from nostr_sdk import Keys
from playwright.sync_api import Browser, Page, expect

from tests.browser import install_nostr_extension
from tests.identity.peers import code_in_dm
from tests.instances import Instance, log_in, signed_login_header

pytestmark = pytest.mark.processes


@pytest.mark.browser
def test_the_owner_claims_a_fresh_node_in_the_browser(
    make_instance: Callable[..., Instance], page: Page
) -> None:
    node = make_instance(SOVEREIGN_SETUP_SECRET="correct horse battery")
    node.serve_web()
    owner = Keys.generate()
    install_nostr_extension(page, owner)

    page.goto(f"{node.url}/people/")
    expect(page).to_have_url(f"{node.url}/setup/")
    page.get_by_label("Setup secret").fill("wrong")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("not the setup secret")
    page.get_by_label("Setup secret").fill("correct horse battery")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Claim with my Nostr extension").click()

    expect(page.locator(".who")).to_contain_text("owner")
    page.goto(f"{node.url}/people/")
    expect(page.locator("#members")).to_contain_text("owner")
    expect(page.locator("#audit")).to_contain_text("Node claimed")
    # Claimed: the setup page is closed for good.
    page.goto(f"{node.url}/setup/")
    expect(page).to_have_url(f"{node.url}/login/")


def test_an_api_key_works_in_the_official_openai_client(
    make_instance: Callable[..., Instance],
) -> None:
    node = make_instance()
    node.serve_web()
    owner = Keys.generate().public_key().to_bech32()
    assert node.manage("claim", owner).returncode == 0
    created = node.manage("apikey", "create", owner, "--name", "scripts")
    key = created.stdout.strip().splitlines()[-1]

    client = openai.OpenAI(base_url=f"{node.url}/api", api_key=key)
    me = client.get("/me", cast_to=object)

    assert me["npub"] == owner
    assert me["role"] == "owner"
    wrong = openai.OpenAI(base_url=f"{node.url}/api", api_key="sov_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="unknown or revoked"):
        wrong.get("/me", cast_to=object)


def code_from_dm(relay_url: str, keys: Keys) -> str:
    # Playwright's loop holds this thread; read the DM from another, as a phone would. The DM
    # leaves the node after its answer ("a code is on its way"): wait for it to arrive.
    with concurrent.futures.ThreadPoolExecutor(1) as reader:
        return reader.submit(code_in_dm, relay_url, keys).result()


@pytest.mark.browser
def test_the_owner_invites_a_member_and_a_friend_who_log_in_their_own_ways(
    make_instance: Callable[..., Instance], browser: Browser, relay_url: str
) -> None:
    node = make_instance(SOVEREIGN_NOSTR_RELAYS=relay_url)
    node.serve_web()
    owner, member, friend = Keys.generate(), Keys.generate(), Keys.generate()
    node.claim(owner)

    owner_page = browser.new_context().new_page()
    install_nostr_extension(owner_page, owner)
    owner_page.goto(f"{node.url}/people/")
    owner_page.get_by_role("button", name="Log in with my Nostr extension").click()
    expect(owner_page).to_have_url(f"{node.url}/people/")
    owner_page.get_by_label("npub").fill(member.public_key().to_bech32())
    owner_page.get_by_role("button", name="Add").click()
    expect(owner_page.locator("#members")).to_contain_text("member")
    owner_page.get_by_label("Role of the invite").select_option("friend")
    owner_page.get_by_role("button", name="Make an invite link").click()
    invite_link = owner_page.locator("#invite-link").inner_text()

    # The member, on a phone with no extension: a code by Nostr DM.
    member_page = browser.new_context().new_page()
    member_page.goto(f"{node.url}/login/")
    member_page.get_by_label("Your npub").fill(member.public_key().to_bech32())
    member_page.get_by_role("button", name="Send me a code").click()
    expect(member_page.locator("#login-status")).to_contain_text("a code is on its way")
    member_page.get_by_label("Code").fill(code_from_dm(relay_url, member))
    member_page.locator("#code-verify-form").get_by_role("button", name="Log in").click()
    expect(member_page.locator(".who")).to_contain_text("member")

    # The friend follows the invite link and logs in with an extension.
    friend_page = browser.new_context().new_page()
    install_nostr_extension(friend_page, friend)
    friend_page.goto(invite_link)
    expect(friend_page.get_by_text("You have an invite")).to_be_visible()
    friend_page.get_by_role("button", name="Log in with my Nostr extension").click()
    expect(friend_page.locator(".who")).to_contain_text("friend")
    assert friend_page.request.get(f"{node.url}/people/").status == 403


@pytest.mark.parametrize(
    "change",
    [["member", "remove"], ["member", "set-role", "--role", "friend"]],
    ids=["removal", "demotion-to-friend"],
)
def test_a_change_of_standing_closes_the_members_open_pages_at_once(
    make_instance: Callable[..., Instance], change: list[str]
) -> None:
    node = make_instance()
    node.serve_web()
    owner, member = Keys.generate(), Keys.generate()
    node.claim(owner)
    assert node.manage("member", "add", member.public_key().to_bech32()).returncode == 0
    cookie = log_in(node, member)

    async def watch_until_closed() -> int | None:
        async with node.status_socket(cookie) as socket:
            await socket.recv()
            command = [*change[:2], member.public_key().to_bech32(), *change[2:]]
            changed = await asyncio.to_thread(node.manage, *command)
            assert changed.returncode == 0, changed.stderr
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(socket.recv(), timeout=10)
            return socket.close_code

    assert asyncio.run(watch_until_closed()) == 4403


def test_a_friend_may_not_watch_the_system_status(make_instance: Callable[..., Instance]) -> None:
    node = make_instance()
    node.serve_web()
    owner, friend = Keys.generate(), Keys.generate()
    node.claim(owner)
    npub = friend.public_key().to_bech32()
    assert node.manage("member", "add", npub, "--role", "friend").returncode == 0
    cookie = log_in(node, friend)

    async def connect() -> None:
        async with node.status_socket(cookie) as socket:
            await socket.recv()

    with pytest.raises(websockets.InvalidStatus, match="403"):
        asyncio.run(connect())


def login_refusal_behind_a_proxy(node: Instance, forwarded_for: str) -> str:
    """A stranger's login through the real server, with an X-Forwarded-For header."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{node.url}/login/").read()
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    headers = {
        "X-CSRFToken": csrf,
        "Referer": f"{node.url}/login/",
        "X-Forwarded-For": forwarded_for,
    }
    issued = json.load(
        opener.open(
            urllib.request.Request(f"{node.url}/auth/challenge", method="POST", headers=headers)
        )
    )
    url = f"{node.url}{issued['path']}"
    header = signed_login_header(Keys.generate(), url, issued["challenge"])
    request = urllib.request.Request(
        url, method="POST", headers={**headers, "Authorization": header}
    )
    try:
        opener.open(request)
    except urllib.error.HTTPError as refusal:
        return str(json.load(refusal)["error"])
    raise AssertionError("a stranger was let in")


def test_behind_a_trusted_proxy_the_client_cannot_choose_its_address(
    make_instance: Callable[..., Instance],
) -> None:
    node = make_instance(SOVEREIGN_TRUSTED_PROXIES="*")
    node.serve_web()
    node.claim(Keys.generate())
    for attempt in range(10):
        login_refusal_behind_a_proxy(node, f"203.0.113.{attempt}, 198.51.100.7")

    spoofed = login_refusal_behind_a_proxy(node, "203.0.113.99, 198.51.100.7")

    assert "Too many failed logins" in spoofed
    assert "Too many" not in login_refusal_behind_a_proxy(node, "198.51.100.8")
