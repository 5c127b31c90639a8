"""What Sovereign adds to an outside request, against calling the same provider directly.

One run, one provider double on loopback, requests alternating between the two paths so both
see the same machine load:

- home network (nothing to pay): the pipeline (route, price and allowance checks, egress
  record, provider record, typed events) against a plain streamed POST with httpx2;
- L402 with a kept token: the pipeline reusing its kept token, against the same POST carrying
  the same `Authorization: L402 …` header;
- L402 with a fresh payment each request (the double sells one request per token): the
  pipeline (402, decode, budgets, journal, xpay, retry) against paying the invoice through the
  wallet and posting again by hand.

Figures: the median of each path's whole answer (until its end reaches the caller: the
request's records are written just after) and time to first token, and the median of the
paired differences (what Sovereign adds). Target (issue 14): at most 5 ms added at the
median with a kept token, at most 2 ms to the first streamed token.

Run: .venv/bin/python bench/providers.py (BENCH_REQUESTS=20 for a quick try). Writes its
section of docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["SOVEREIGN_DATA_DIR"] = tempfile.mkdtemp(prefix="sovereign-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "sovereign.settings"

import django  # noqa: E402

django.setup()

import httpx2  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from apps.identity.models import Member  # noqa: E402
from apps.inference import pipeline  # noqa: E402
from apps.inference.answering import Sampling  # noqa: E402
from apps.inference.backends.base import Done, Token  # noqa: E402
from apps.providers import services  # noqa: E402
from apps.providers.models import Credential  # noqa: E402
from apps.providers.sealing import unseal  # noqa: E402
from apps.wallet import services as wallet  # noqa: E402
from bench.report import write_section  # noqa: E402
from tests.lightningd import ProcessDouble  # noqa: E402
from tests.providers.doubles.l402 import L402Double  # noqa: E402
from tests.providers.doubles.openai_shape import OpenAIShapedDouble  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 200))
SAMPLING = Sampling(max_tokens=64, temperature=0.0, top_p=1.0, seed=1)
QUESTION = [{"role": "user", "content": "how many sats make a bitcoin"}]
Timing = tuple[float, float]  # whole request, first token (ms)


async def through_sovereign(member: Member, model: str) -> Timing:
    started = time.perf_counter()
    first = 0.0
    request = pipeline.AnswerRequest(member, pipeline.Origin.API, model, QUESTION, SAMPLING)
    events = await pipeline.answer(request)
    async for event in events:
        if isinstance(event, Token) and not first:
            first = time.perf_counter()
        if not isinstance(event, Token):
            assert isinstance(event, Done), event
            break  # the caller has the whole answer; the records are written after it
    ended = time.perf_counter()
    await events.aclose()
    return _ms(started, ended), _ms(started, first)


async def direct(client: httpx2.AsyncClient, url: str, body: dict[str, Any],
                 headers: dict[str, str]) -> Timing:  # fmt: skip
    started = time.perf_counter()
    first = 0.0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                             headers=headers) as response:  # fmt: skip
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if not first and line.startswith("data:") and '"content"' in line:
                first = time.perf_counter()
    return _ms(started, time.perf_counter()), _ms(started, first)


def _ms(start: float, end: float) -> float:
    return (end - start) * 1000


async def side_by_side(
    ours: Callable[[], Awaitable[Timing]], theirs: Callable[[], Awaitable[Timing]]
) -> dict[str, float]:
    for _ in range(5):  # connections open, caches warm
        await ours()
        await theirs()
    mine: list[Timing] = []
    plain: list[Timing] = []
    for n in range(REQUESTS):
        pair = (ours, theirs) if n % 2 else (theirs, ours)
        first, second = await pair[0](), await pair[1]()
        (mine if n % 2 else plain).append(first)
        (plain if n % 2 else mine).append(second)
    return {
        "direct_ms": statistics.median(t[0] for t in plain),
        "sovereign_ms": statistics.median(t[0] for t in mine),
        "added_ms": statistics.median(m[0] - p[0] for m, p in zip(mine, plain, strict=True)),
        "first_token_added_ms": statistics.median(
            m[1] - p[1] for m, p in zip(mine, plain, strict=True)
        ),
    }


def body_for(model_id: str) -> dict[str, Any]:
    return {"model": model_id, "messages": QUESTION, "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": 64,
            "temperature": 0.0, "top_p": 1.0, "seed": 1}  # fmt: skip


async def home_network(member: Member) -> dict[str, float]:
    with OpenAIShapedDouble() as double:
        await sync_to_async(services.provider_add)(double.url, kind="openai", name="lan")
        async with httpx2.AsyncClient() as client:
            return await side_by_side(
                lambda: through_sovereign(member, "lan/strong-1"),
                lambda: direct(client, double.url, body_for("strong-1"), {}),
            )


def kept_header() -> dict[str, str]:
    """The credential Sovereign keeps (its token and the payment's preimage), for the direct
    path to present the same."""
    token = Credential.objects.filter(state=Credential.State.LIVE).latest("id")
    payment = wallet.payment_for(token.payment_purpose)
    assert payment is not None
    return {"Authorization": f"{token.scheme} {unseal(token.secret_sealed)}:{payment.preimage}"}


async def kept_token(member: Member, double: L402Double) -> dict[str, float]:
    await sync_to_async(services.provider_add)(double.url, kind="l402", name="kept")
    await through_sovereign(member, "kept/strong-1")  # pays once: the token is kept
    header = await sync_to_async(kept_header)()
    async with httpx2.AsyncClient() as client:
        return await side_by_side(
            lambda: through_sovereign(member, "kept/strong-1"),
            lambda: direct(client, double.url, body_for("strong-1"), header),
        )


async def paid_by_hand(client: httpx2.AsyncClient, url: str, n: list[int]) -> Timing:
    """Ask, pay the 402's invoice through the wallet, ask again with the token: what a client
    of the wallet would write without Sovereign's providers."""
    started = time.perf_counter()
    response = await client.post(f"{url}/v1/chat/completions", json=body_for("strong-1"))
    assert response.status_code == 402
    challenge = response.headers.get_list("www-authenticate")[-1]
    token = challenge.split('macaroon="')[1].split('"')[0]
    invoice = challenge.split('invoice="')[1].split('"')[0]
    n[0] += 1
    order = wallet.PayOrder(invoice, f"by-hand-{n[0]}", "bench", max_amount_msat=20_000)
    payment = await sync_to_async(wallet.pay)(order)
    header = {"Authorization": f"L402 {token}:{payment.preimage}"}
    first_started = time.perf_counter()
    whole, first = await direct(client, url, body_for("strong-1"), header)
    offset = _ms(started, first_started)
    return whole + offset, first + offset


async def fresh_payment(member: Member, double: L402Double) -> dict[str, float]:
    await sync_to_async(services.provider_add)(double.url, kind="l402", name="fresh")
    count = [0]
    async with httpx2.AsyncClient() as client:
        return await side_by_side(
            lambda: through_sovereign(member, "fresh/strong-1"),
            lambda: paid_by_hand(client, double.url, count),
        )


async def measure(payer: ProcessDouble, payee: ProcessDouble) -> dict[str, dict[str, float]]:
    member = await sync_to_async(Member.objects.create_user)(pubkey="ab" * 32, role="owner")
    figures = {"home network": await home_network(member)}
    with L402Double(payee, price_msat=20_000, requests_per_token=10**9) as double:  # type: ignore[arg-type]
        figures["L402, kept token"] = await kept_token(member, double)
    with L402Double(payee, price_msat=20_000, requests_per_token=1) as double:  # type: ignore[arg-type]
        figures["L402, a payment each request"] = await fresh_payment(member, double)
    return figures


def main() -> None:
    call_command("migrate", verbosity=0)
    directory = Path(os.environ["SOVEREIGN_DATA_DIR"])
    with (
        ProcessDouble(directory / "payee", alias="provider") as payee,
        ProcessDouble(directory / "payer", alias="household") as payer,
    ):
        payer.connect(payee, amount_sat=10_000_000, push_msat=0)
        settings.LIGHTNING_RPC = str(payer.rpc_file)
        figures = asyncio.run(measure(payer, payee))
    rows = [
        f"| {case} | {f['direct_ms']:.2f} ms | {f['sovereign_ms']:.2f} ms | "
        f"{f['added_ms']:.2f} ms | {f['first_token_added_ms']:.2f} ms |"
        for case, f in figures.items()
    ]
    write_section(
        "Outside providers: what Sovereign adds to a request",
        f"""`bench/providers.py`: {REQUESTS} streamed requests each way against the same provider
double on loopback, alternating. "added" is the median of the paired differences; "whole"
is until the answer's end reaches the caller (its records are written just after).
Target: at most 5 ms added with a kept token, at most 2 ms to the first token.

Before its first byte leaves, an outside request makes one trip to the database thread: the
route and the budgets read, the egress record written (before sending, so that a crash keeps
it), a kept token and its payment's proof read. With a kept token that trip is most of what is
added; a fresh payment adds the node's `decode`, the journal's pending row and the retry.

| case | direct | through Sovereign | added | added to first token |
|---|---|---|---|---|
"""
        + "\n".join(rows),
    )
    print(json.dumps({"bench": "providers", "requests": REQUESTS, **figures}))


if __name__ == "__main__":
    main()
