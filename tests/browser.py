"""Headless Chromium for dashboard tests, and a test NIP-07 extension backed by a real key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nostr_sdk import EventBuilder, Keys, Kind, Tag, Timestamp
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "build" / "screenshots"
# Every page is watched for what the Content-Security-Policy blocked: an inline style or
# script that slipped in works nowhere but in a test that does not look.
CSP_WATCH = (
    "document.addEventListener('securitypolicyviolation', (e) => {"
    "  (window.cspViolations = window.cspViolations || [])"
    "    .push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);"
    "});"
)
# The elements reaching furthest past the right edge: what a failure names.
WIDEST = """() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth)
    .sort((a, b) => b.getBoundingClientRect().right - a.getBoundingClientRect().right)
    .slice(0, 3)
    .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className}`)"""
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        raise AssertionError("chromium is not installed (.ci/run installs it).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def install_nostr_extension(page: Page, keys: Keys) -> None:
    """A `window.nostr` (NIP-07) whose signEvent signs with keys, as Alby or nos2x would."""

    def sign(template_json: str) -> str:
        template = json.loads(template_json)
        builder = (
            EventBuilder(Kind(template["kind"]), template["content"])
            .tags([Tag.parse(tag) for tag in template["tags"]])
            .custom_created_at(Timestamp.from_secs(template["created_at"]))
        )
        return str(builder.finalize(keys).as_json())

    page.expose_function("testExtensionSign", sign)
    page.add_init_script(
        "window.nostr = {"
        f"  getPublicKey: async () => '{keys.public_key().to_hex()}',"
        "  signEvent: async (t) => JSON.parse(await window.testExtensionSign(JSON.stringify(t))),"
        "};"
    )


def watch_content_security_policy(page: Page) -> None:
    page.add_init_script(CSP_WATCH)


def audit_page(page: Page, name: str) -> None:
    """Check the page as people get it: no sideways scrolling, no serious or critical
    accessibility violation (axe-core), nothing blocked by the CSP; keep a screenshot in
    build/screenshots/<name>-<width>.png to look at."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}-{width}.png", full_page=True)
    scroll_width, inner_width = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= inner_width, (
        f"{name} at {width} px scrolls sideways: {scroll_width} px wide, "
        f"widened by {page.evaluate(WIDEST)}"
    )
    blocked = page.evaluate("() => window.cspViolations || []")
    assert not blocked, f"{name}: the Content-Security-Policy blocked {blocked}"
    violations = _axe_violations(page)
    assert not violations, f"{name} at {width} px: " + "; ".join(violations)


def _axe_violations(page: Page) -> list[str]:
    if not AXE.exists():
        raise AssertionError(
            f"axe-core is missing at {AXE.relative_to(ROOT)}: `make test` installs it."
        )
    # Evaluated, not added as a <script>: the page's CSP rightly refuses inline scripts.
    page.evaluate(f"() => {{ {AXE.read_text()}\n }}")
    results = page.evaluate("async () => (await window.axe.run(document)).violations")
    return [
        f"{violation['id']} ({violation['impact']}) at "
        + ", ".join(str(node["target"]) for node in violation["nodes"][:5])
        for violation in results
        if violation["impact"] in ("serious", "critical")
    ]
