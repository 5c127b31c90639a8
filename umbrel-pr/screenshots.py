"""Takes the three 1440x900 screenshots in umbrel-pr/gallery/ from a real node.

Run from the repository root: `.venv/bin/python umbrel-pr/screenshots.py`. The node pays
through the lightningd double (on mainnet, as a household's would be) and an L402 provider
double, as the browser tests do; the engine runs the bundled SmolLM2 file.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nostr_sdk import Keys  # noqa: E402
from playwright.sync_api import Page, expect  # noqa: E402

from tests.browser import chromium, install_nostr_extension  # noqa: E402
from tests.instances import Instance  # noqa: E402
from tests.lightningd import LightningdDouble  # noqa: E402
from tests.providers.doubles.l402 import L402Double  # noqa: E402

GALLERY = Path(__file__).resolve().parent / "gallery"
VIEWPORT = {"width": 1440, "height": 900}
OUTSIDE = "aperture/strong-1"
QUESTION = (
    "Please draft a short, polite note to my landlord: the heating in my flat has been broken "
    "since Monday. My address is Lindenstraße 12. He can reach me at annika.berg@example.org "
    "or +49 170 1234567."
)
GOAL = "Tidy up my notes from the school parents' evening into a short list of what we agreed"


@contextmanager
def household(base: Path, owner: Keys) -> Iterator[Instance]:
    """A claimed node with engine and worker, a channel, and an L402 provider added."""
    with (
        LightningdDouble(base / "provider", alias="provider", network="bitcoin") as provider,
        LightningdDouble(base / "household", alias="household", network="bitcoin") as lightning,
        L402Double(provider, price_msat=20_000, requests_per_token=1) as aperture,
    ):
        lightning.connect(provider, amount_sat=1_000_000, push_msat=100_000_000)
        (base / "node").mkdir()
        node = Instance(base / "node", SOVEREIGN_LIGHTNING_RPC=str(lightning.rpc_file))
        node.run("web", "engine", "worker")
        try:
            node.wait_until("engine", "up", timeout=180)
            node.wait_until("worker", "up", timeout=180)
            node.claim(owner)
            added = node.manage(
                "providers", "add", aperture.url, "--kind", "l402", "--name", "aperture"
            )
            assert added.returncode == 0, added.stderr
            yield node
        finally:
            node.stop()


def chat_preview(page: Page, url: str) -> None:
    """1: what leaves the node, redacted, before a paid question is sent."""
    page.goto(f"{url}/chat/")
    page.locator("select[name=model]").select_option(OUTSIDE)
    page.get_by_label("Question").fill(QUESTION)
    page.get_by_label("Question").press("Enter")
    dialog = page.get_by_role("dialog", name="What will leave this node")
    expect(dialog).to_be_visible()
    page.screenshot(path=GALLERY / "1.png")
    dialog.get_by_role("button", name="Send").click()
    answer = page.locator(".answer .provenance summary").last
    expect(answer).to_contain_text("20 sat", timeout=60_000)


def agent_plan(page: Page, url: str) -> None:
    """2: an agent's plan, waiting for a person to approve it."""
    page.goto(f"{url}/agents/")
    page.get_by_label("Goal").fill(GOAL)
    page.get_by_role("button", name="Make a plan").click()
    approve = page.get_by_role("button", name="Approve the plan")
    expect(approve).to_be_visible(timeout=120_000)
    page.screenshot(path=GALLERY / "2.png")


def wallet(page: Page, url: str) -> None:
    """3: the household's Lightning node and its budgets."""
    page.goto(f"{url}/wallet/")
    page.locator("input[name=limit_sat]").fill("5000")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("cell", name="5,000 sat per day")).to_be_visible()
    page.goto(f"{url}/wallet/")
    page.screenshot(path=GALLERY / "3.png")


def main() -> None:
    owner = Keys.generate()
    GALLERY.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as base,
        household(Path(base), owner) as node,
        chromium() as browser,
    ):
        page = browser.new_context(viewport=VIEWPORT).new_page()  # type: ignore[arg-type]
        install_nostr_extension(page, owner)
        page.goto(f"{node.url}/login/")
        page.get_by_role("button", name="Log in with my Nostr extension").click()
        page.wait_for_url(lambda url: "/login" not in url)
        for shoot in (chat_preview, agent_plan, wallet):
            shoot(page, node.url)


if __name__ == "__main__":
    main()
