"""Agents: from a person's approval to the step it releases starting, and what the scheduler
adds to a step, on the embedded broker and on Redis, side by side in one run.

A real node for each broker (`manage.py run`: web, worker with its beat, model engine; the
owner claimed from the command line with a key made for the run; the node's relays pointed at
a local relay, nostr-sdk's LocalRelayBuilder), and beside it bench/agents_measure.py in a
process with the node's settings and database:

1. Approval to step start. A task whose only step is a local model call estimated above the
   policy's approval threshold: the plan is approved, the worker holds the step for a person
   and DMs the owner a code. Then the owner approves it, in turn:
   - as the dashboard's view does (`approvals.step_approve`, how "dashboard");
   - by a DM code as the inbox redeems it (`approvals.code_redeem`): the node's side alone;
   - by replying to the node's DM with its code, from a Nostr client of the owner's on the
     relay (a NIP-17 gift wrap): the whole path, the node reading its inbox on its beat.
   Measured from the approval (the call, or the reply sent) until the worker's audit row of
   the step moving to running: between them `agents.advance` crosses the broker, releases
   the step and sends `agents.step_run` across it again.
2. The DM relay apart: a gift wrap from the owner to the node published until the relay
   accepts it, then fetched by id and unwrapped with the node's key, as an inbox read does.
3. The scheduler's overhead per step: the same step sent to the worker (`agents.step_run`
   through the broker, until the step is done) or run by calling `execution.step_run` in the
   bench's process, alternating; each pair's difference is the overhead. Two steps: a paid
   HTTP request to a loopback page that asks for no payment (the smallest step there is), and
   a call to the bundled SmolLM2 greeted with "Hi" (it answers with nearly the same short
   sentence each time). Both paths are split at the step's start (its audit row): what comes
   before it is the broker's hop and the worker taking the task.

Targets (issue 16): approval to step start at most 200 ms on Redis and 1 s embedded (the
median and the 95th percentile both checked); the DM relay's latency is reported apart.

Run: .venv/bin/python bench/agents.py (needs redis-server; BENCH_ROUNDS=5 for a quick try).
Writes the "Agents" section of docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 30))
TARGET_REDIS_MS = 200.0
TARGET_EMBEDDED_MS = 1000.0
MEASURE = Path(__file__).resolve().parent / "agents_measure.py"
Times = dict[str, list[float]]


# --- the relay, apart -------------------------------------------------------------------------


async def relay_round_trips(url: str) -> Times:
    """A gift wrap from the owner to the node: published until the relay says OK, then fetched
    by id and unwrapped with the node's key."""
    from nostr_sdk import (
        Client,
        EventBuilder,
        Filter,
        Keys,
        Kind,
        RelayUrl,
        ReqTarget,
        Tag,
        UnwrappedGift,
        nip59_make_gift_wrap,
    )

    node, owner = Keys.generate(), Keys.generate()
    owner_client, node_client = Client(), Client()
    for client in (owner_client, node_client):
        await client.add_relay(RelayUrl.parse(url))
        await client.connect(timedelta(seconds=5))
    times: Times = {"publish": [], "fetch": [], "relay_total": []}
    for _ in range(ROUNDS + 3):
        rumor = (
            EventBuilder(Kind(14), "ABCD2345")
            .tags([Tag.public_key(node.public_key())])
            .finalize_unsigned(owner.public_key())
            .ensure_id()
        )
        wrap = nip59_make_gift_wrap(owner, node.public_key(), rumor)
        began = time.perf_counter()
        sent = await owner_client.send_event(wrap)
        accepted = time.perf_counter()
        wanted = Filter().kind(Kind(1059)).id(wrap.id())
        found = await node_client.fetch_events(ReqTarget.auto([wanted]), timedelta(seconds=5))
        (event,) = list(found)
        text = UnwrappedGift.from_gift_wrap(node, event).rumor().content()
        ended = time.perf_counter()
        assert sent.success and text == "ABCD2345"
        times["publish"].append((accepted - began) * 1000)
        times["fetch"].append((ended - accepted) * 1000)
        times["relay_total"].append((ended - began) * 1000)
    for client in (owner_client, node_client):
        await client.shutdown()
    return {key: values[3:] for key, values in times.items()}  # the first connections' cost off


class LocalRelay:
    """nostr-sdk's relay on loopback, on a thread and loop of its own."""

    def __init__(self) -> None:
        from nostr_sdk import LocalRelayBuilder, RateLimit

        async def start() -> tuple[Any, str]:
            relay = (
                LocalRelayBuilder()
                .addr("127.0.0.1")
                .rate_limit(RateLimit(max_reqs=10_000, notes_per_minute=100_000))
                .build()
            )
            await relay.run()
            return relay, str(await relay.url())

        with concurrent.futures.ThreadPoolExecutor(1) as starter:
            self.relay, self.url = starter.submit(asyncio.run, start()).result()

    def stop(self) -> None:
        self.relay.shutdown()


# --- the run ----------------------------------------------------------------------------------


def on_node(node: Any) -> Times:
    """Start the node, claim it, measure beside it with its settings, stop it."""
    from nostr_sdk import Keys

    owner = Keys.generate()  # made for this run, and only ever on this machine
    node.run()
    node.wait_until("worker", "up", timeout=120)
    node.wait_until("engine", "up", timeout=120)
    node.claim(owner)
    try:
        result = subprocess.run(
            [sys.executable, str(MEASURE)],
            cwd=MEASURE.parent.parent,
            env={**node.env, "BENCH_OWNER_SECRET": owner.secret_key().to_hex()},
            capture_output=True,
            text=True,
            timeout=3600,
        )
    finally:
        node.stop()
    if result.returncode != 0:
        raise SystemExit(f"{result.stderr}\n{node.logs()[-4000:]}")
    times: Times = json.loads(result.stdout.strip().splitlines()[-1])
    return times


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[round(0.95 * (len(ordered) - 1))], 1),
    }


def figures_of(runs: dict[str, Times], relay: Times, inbox_every_s: float) -> dict[str, Any]:
    figures: dict[str, Any] = {"rounds": ROUNDS}
    for broker, times in runs.items():
        distinct = int(times.pop("distinct_answers")[0])
        side = figures[broker] = {key: summary(values) for key, values in times.items()}
        for kind in ("http", "model"):
            worker, direct = times[f"{kind}_worker_total"], times[f"{kind}_direct_total"]
            # Paired: each worker run less the direct call that followed it.
            side[f"{kind}_overhead"] = summary([w - d for w, d in zip(worker, direct, strict=True)])
            side[f"{kind}_worker_to_direct_ratio"] = round(
                statistics.median(worker) / max(statistics.median(direct), 0.01), 2
            )
        side["distinct_model_answers"] = distinct
    embedded, redis = figures["embedded"]["dashboard"], figures["redis"]["dashboard"]
    figures["approval_ratio_embedded_to_redis"] = round(
        embedded["median_ms"] / max(redis["median_ms"], 0.01), 1
    )
    figures["relay"] = {key: summary(values) for key, values in relay.items()}
    figures["inbox_read_every_s"] = inbox_every_s
    figures["targets_met"] = {
        f"{broker}_{figure}": side[f"{figure}_ms"] <= target
        for broker, side, target in (
            ("redis", redis, TARGET_REDIS_MS),
            ("embedded", embedded, TARGET_EMBEDDED_MS),
        )
        for figure in ("median", "p95")
    }
    return figures


def main() -> None:
    from bench.processes import Others
    from bench.report import write_section
    from tests.instances import Instance, RedisServer

    others = Others()
    relay = LocalRelay()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        redis = RedisServer(root)
        try:
            runs = {}
            for broker, environment in (("embedded", {}), ("redis", {"REDIS_URL": redis.url})):
                (root / broker).mkdir()
                node = Instance(root / broker, SOVEREIGN_NOSTR_RELAYS=relay.url, **environment)
                runs[broker] = on_node(node)
            relay_times = asyncio.run(relay_round_trips(relay.url))
        finally:
            redis.stop()
            relay.stop()
    figures = figures_of(runs, relay_times, _inbox_interval())
    figures["others_cpu_share"] = round(others.share(), 2)
    write_section("Agents", render(figures))
    print(json.dumps(figures))


def _inbox_interval() -> float:
    os.environ.setdefault("SOVEREIGN_DATA_DIR", tempfile.mkdtemp(prefix="sovereign-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sovereign.settings")
    from django.conf import settings

    schedule: dict[str, dict[str, Any]] = settings.CELERY_BEAT_SCHEDULE
    return float(schedule["agents-inbox"]["schedule"])


def render(figures: dict[str, Any]) -> str:
    embedded, redis, relay = figures["embedded"], figures["redis"], figures["relay"]

    def row(label: str, key: str) -> str:
        cells = [
            f"{side[key]['median_ms']} ms | {side[key]['p95_ms']} ms" for side in (embedded, redis)
        ]
        return f"| {label} | {' | '.join(cells)} |"

    def met(key: str) -> str:
        return "met" if figures["targets_met"][key] else "missed"

    def ms(figure: dict[str, float]) -> str:
        return f"{figure['median_ms']} ms (p95 {figure['p95_ms']} ms)"

    def ratios(kind: str) -> str:
        key = f"{kind}_worker_to_direct_ratio"
        return f"{embedded[key]}× the direct call's time embedded and {redis[key]}× on Redis"

    table = [
        "| measure | embedded median | embedded p95 | Redis median | Redis p95 |",
        "|---|---|---|---|---|",
        row("Approval to step start: dashboard", "dashboard"),
        row("Approval to step start: DM code redeemed", "dm_code"),
        row("Approval to step start: DM reply sent", "dm_reply"),
        row("HTTP step sent to the worker: to its start", "http_worker_to_start"),
        row("HTTP step called directly: to its start", "http_direct_to_start"),
        row("HTTP step sent to the worker: to done", "http_worker_total"),
        row("HTTP step called directly: to done", "http_direct_total"),
        row("HTTP step: the scheduler's overhead (paired)", "http_overhead"),
        row("Model step sent to the worker: to done", "model_worker_total"),
        row("Model step called directly: to done", "model_direct_total"),
        row("Model step: the scheduler's overhead (paired)", "model_overhead"),
    ]
    paragraphs = [
        "`bench/agents.py`: a real node per broker (web, worker with its beat, engine), and "
        f"{figures['rounds']} rounds of each measure beside it, taking turns, in one run. Other "
        f"processes took {figures['others_cpu_share']:.0%} of the machine's CPU meanwhile.",
        "\n".join(table),
        "Approval to step start: from the approval (`approvals.step_approve` called as the "
        "dashboard's view calls it; `approvals.code_redeem` called as the DM inbox calls it "
        "with a reply's code; or the owner's gift-wrapped reply to the node's DM sent to the "
        "relay) to the worker's audit row of the step starting. Between them the approval "
        "commits, `agents.advance` crosses the broker, releases the step and sends "
        f"`agents.step_run` across it again. Targets: Redis at most {TARGET_REDIS_MS:.0f} ms "
        f"(median {met('redis_median')}, p95 {met('redis_p95')}), embedded at most "
        f"{TARGET_EMBEDDED_MS:.0f} ms (median {met('embedded_median')}, p95 "
        f"{met('embedded_p95')}). Embedded takes {figures['approval_ratio_embedded_to_redis']}× "
        "Redis's time: its broker is a folder polled every 100 ms, crossed twice on this path.",
        "A DM reply waits for the node's next inbox read, every "
        f"{figures['inbox_read_every_s']:g} s (`agents-inbox`, on the worker's beat, only while "
        "a code is out): half that on average, which is most of the DM path's time. The relay "
        "apart (nostr-sdk's local relay on loopback): a gift wrap published until the relay "
        f"accepts it, {ms(relay['publish'])}; fetched by id and unwrapped with the node's key, "
        f"{ms(relay['fetch'])}; in all {ms(relay['relay_total'])}. A public relay's distance "
        "comes on top.",
        "The scheduler's overhead per step: the same step sent to the worker as "
        "`agents.step_run` or run by `execution.step_run` called in the bench's process, "
        "alternating; the overhead is each worker run's time to done less the direct call's "
        "after it. The HTTP step is a paid HTTP request to a loopback page that asks for no "
        "payment, the smallest step there is: through the worker it takes "
        f"{ratios('http')} (medians to done). The model step is a call "
        'to the bundled SmolLM2 greeted with "Hi" (nearly the same short answer each time: '
        f"{embedded['distinct_model_answers']} and {redis['distinct_model_answers']} distinct "
        f"answers in {2 * figures['rounds']} runs): {ratios('model')}. What comes before a "
        "step's start is the broker's hop and the worker taking the task; the rest is the "
        "same code in both.",
    ]
    wrapped = [part if part.startswith("|") else textwrap.fill(part, 92) for part in paragraphs]
    return "\n\n".join(wrapped)


if __name__ == "__main__":
    main()
