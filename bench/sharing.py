"""Selling answers: what a stranger's paid request costs in time against a member's, and the
household's speed while strangers hold their slots.

One real node (web server + engine, the bundled model, 4 slots) selling that model for 1 sat a
request, its Lightning node a lightningd double joined to a second double that pays as the
stranger:

1. The same streamed question, alternating: by a member with an API key, and by a stranger with
   a kept L402 token (paid once; its balance covers every request). Medians of the whole
   request and of the first token, and of the paired differences: what selling adds (the
   token's check, the reservation, the sale's record and its signed receipt).
2. A member's streamed answer alone, then while four strangers ask at once (they may hold 3 of
   the engine's 4 slots, SOVEREIGN_SHARING_STRANGER_SLOTS; the fourth stranger waits): the
   member's time to first token and tokens per second, each way.

Run: .venv/bin/python bench/sharing.py (BENCH_REQUESTS=5 for a quick try). Writes its section of
docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2  # noqa: E402
from nostr_sdk import Keys  # noqa: E402

from bench.report import write_section  # noqa: E402
from tests.instances import Instance  # noqa: E402
from tests.lightningd import ProcessDouble  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 20))
STRANGERS = 4
MAX_TOKENS = 48
MODEL = "smollm2-135m-instruct"


def body(question: str) -> dict[str, Any]:
    return {"model": MODEL, "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": question}]}  # fmt: skip


def streamed(
    client: httpx2.Client, url: str, headers: dict[str, str], question: str
) -> dict[str, float]:
    """One streamed answer: whole time, first token, and tokens a second after it (ms, /s)."""
    started = time.perf_counter()
    first, chunks = 0.0, 0
    with client.stream(
        "POST", f"{url}/v1/chat/completions", json=body(question), headers=headers
    ) as response:
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: {") or '"content":"' not in line.replace(" ", ""):
                continue
            if '"content": ""' in line:
                continue
            chunks += 1
            first = first or time.perf_counter()
    ended = time.perf_counter()
    rate = (chunks - 1) / (ended - first) if chunks > 1 and ended > first else 0.0
    return {"whole_ms": (ended - started) * 1000, "first_ms": (first - started) * 1000,
            "tokens_per_s": rate}  # fmt: skip


def token_header(client: httpx2.Client, url: str, payer: ProcessDouble) -> dict[str, str]:
    """A stranger's L402 token, paid once with the payer double."""
    response = client.post(f"{url}/v1/chat/completions", json=body("hello"))
    assert response.status_code == 402, response.status_code
    challenge = next(
        v for v in response.headers.get_list("www-authenticate") if v.startswith("L402")
    )
    macaroon = challenge.split('macaroon="')[1].split('"')[0]
    invoice = challenge.split('invoice="')[1].split('"')[0]
    preimage = payer.rpc.xpay(invoice)["payment_preimage"]
    return {"Authorization": f"L402 {macaroon}:{preimage}"}


def side_by_side(
    client: httpx2.Client, url: str, member: dict[str, str], stranger: dict[str, str]
) -> dict[str, float]:
    members, strangers, added, first_added = [], [], [], []
    for n in range(REQUESTS):
        question = f"name a colour ({n})"
        mine = streamed(client, url, member, question)
        theirs = streamed(client, url, stranger, question)
        members.append(mine)
        strangers.append(theirs)
        added.append(theirs["whole_ms"] - mine["whole_ms"])
        first_added.append(theirs["first_ms"] - mine["first_ms"])
    med = statistics.median
    return {
        "member_ms": med(m["whole_ms"] for m in members),
        "stranger_ms": med(s["whole_ms"] for s in strangers),
        "added_ms": med(added),
        "first_token_added_ms": med(first_added),
    }


def household_while_strangers(
    url: str, member: dict[str, str], strangers: list[dict[str, str]]
) -> dict[str, float]:
    with httpx2.Client(timeout=300) as client:
        alone = [streamed(client, url, member, f"count to ten ({n})") for n in range(3)]
    with ThreadPoolExecutor(STRANGERS + 1) as pool, httpx2.Client(timeout=300) as client:
        busy = [pool.submit(streamed, client, url, header, f"tell a long story ({n})")
                for n, header in enumerate(strangers)]  # fmt: skip
        time.sleep(0.5)  # the strangers have taken their slot and queued the rest
        during = [streamed(client, url, member, f"count to ten ({n})") for n in range(3)]
        for future in busy:
            future.result()
    med = statistics.median
    return {
        "alone_first_ms": med(a["first_ms"] for a in alone),
        "alone_tokens_per_s": med(a["tokens_per_s"] for a in alone),
        "with_strangers_first_ms": med(d["first_ms"] for d in during),
        "with_strangers_tokens_per_s": med(d["tokens_per_s"] for d in during),
    }


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="sovereign-bench-sharing-"))
    with (
        ProcessDouble(root / "seller", alias="seller") as seller,
        ProcessDouble(root / "payer", alias="payer") as payer,
    ):
        payer.connect(seller, amount_sat=10_000_000, push_msat=0)
        (root / "node").mkdir()
        node = Instance(
            root / "node",
            SOVEREIGN_LIGHTNING_RPC=str(seller.rpc_file),
            SOVEREIGN_ENGINE_SLOTS="4",
            SOVEREIGN_SHARING_STRANGER_SLOTS="3",  # the household keeps one slot of the four
            SOVEREIGN_SHARING_TOKEN_REQUESTS="10000",  # noqa: S106 - a count, not a secret
            SOVEREIGN_SHARING_REQUESTS_PER_MINUTE="10000",
            SOVEREIGN_LOG_LEVEL="WARNING",
        )
        try:
            node.run("web", "engine")
            node.wait_until("engine", "up", timeout=120)
            owner = Keys.generate()
            node.claim(owner)
            key = (
                node.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "bench")
                .stdout.strip()
                .splitlines()[-1]
            )
            sold = node.manage("sharing", "sell", MODEL, "--price-sat", "1")
            if sold.returncode != 0:
                raise SystemExit(sold.stderr)
            url, member = node.url, {"Authorization": f"Bearer {key}"}
            with httpx2.Client(timeout=300) as client:
                stranger = token_header(client, url, payer)
                streamed(client, url, member, "warm up")
                streamed(client, url, stranger, "warm up")
                paid = side_by_side(client, url, member, stranger)
                tokens = [token_header(client, url, payer) for _ in range(STRANGERS)]
            lane = household_while_strangers(url, member, tokens)
        finally:
            node.stop()
    report(paid, lane)


def report(paid: dict[str, float], lane: dict[str, float]) -> None:
    slowed = (
        lane["with_strangers_tokens_per_s"] / lane["alone_tokens_per_s"]
        if lane["alone_tokens_per_s"]
        else 0.0
    )
    write_section(
        "Selling answers",
        f"""`bench/sharing.py`: one node (web server and engine, the bundled model, 4 slots) selling
it for 1 sat a request; its Lightning node a double, paid by a second double.

The same streamed question ({MAX_TOKENS} tokens at most, greedy), {REQUESTS} times each way,
alternating: by a member with an API key, and by a stranger with a kept L402 token. "Added"
is the median of the paired differences: the per-address count, the token's check (macaroon,
the balance's row), the reservation, the audit row, then the sale's record and its signed
receipt: four commits on SQLite with `synchronous=FULL`. A stranger reuses only its own cached
prompt (a cache group per token or key, never the household's), so each buyer's first request
decodes the chat template anew; later ones reuse it as a member's do.

| | member | stranger, kept token | added | added to first token |
|---|---|---|---|---|
| whole request | {paid["member_ms"]:.1f} ms | {paid["stranger_ms"]:.1f} ms \
| {paid["added_ms"]:.1f} ms | {paid["first_token_added_ms"]:.1f} ms |

A member's answer alone, then while {STRANGERS} strangers ask at once with
`SOVEREIGN_SHARING_STRANGER_SLOTS=3` of the engine's 4 slots (the fourth stranger waits behind
the household; 1 slot is the default):

| | alone | while {STRANGERS} strangers ask |
|---|---|---|
| first token | {lane["alone_first_ms"]:.0f} ms | {lane["with_strangers_first_ms"]:.0f} ms |
| tokens/s | {lane["alone_tokens_per_s"]:.1f} \
| {lane["with_strangers_tokens_per_s"]:.1f} ({slowed:.2f}×) |

The member starts at once in the slot strangers may not take; its answer then shares every
decode step with the three strangers' (one batch), which is what its tokens/s pays. With the
default of 1 stranger slot, the household keeps three of the four.
""",
    )
    print(json.dumps({"bench": "sharing", "requests": REQUESTS, **paid, **lane,
                      "household_speed_ratio": round(slowed, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
