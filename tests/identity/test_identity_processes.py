"""Identity against a running node: claiming it in Chromium, and an API key in the OpenAI client."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest
from nostr_sdk import Keys
from playwright.sync_api import Page, expect

from tests.browser import install_nostr_extension
from tests.instances import Instance

pytestmark = pytest.mark.processes


@pytest.mark.browser
def test_the_owner_claims_a_fresh_node_in_the_browser(
    make_instance: Callable[..., Instance], page: Page
) -> None:
    node = make_instance(SOVEREIGN_SETUP_SECRET="correct horse battery")
    node.run("web")
    node.wait_until("web", "up")
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
    node.run("web")
    node.wait_until("web", "up")
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
