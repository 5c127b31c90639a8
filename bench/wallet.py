"""Paying through Sovereign's wallet against a direct `xpay`, side by side in one run.

Both pay real BOLT11 invoices through the same lightningd double (one payee double, one
channel). The wallet's path adds what makes payments safe: the invoice decoded and checked by
the node, every budget checked and the pending row written in one serialised transaction,
then the row settled with the proof checked. Payments alternate between the two paths so
both see the same machine load.

Run: .venv/bin/python bench/wallet.py. Writes docs/benchmarks.md's section and prints one
line of JSON with the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["SOVEREIGN_DATA_DIR"] = tempfile.mkdtemp(prefix="sovereign-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "sovereign.settings"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from apps.wallet import budgets, services  # noqa: E402
from apps.wallet.backends import cln  # noqa: E402
from bench.report import write_section  # noqa: E402
from tests.lightningd import ProcessDouble  # noqa: E402

PAYMENTS = 200
AMOUNT = 10_000


class NodeClock:
    """Adds up the time the wallet spends waiting for the node, to tell its own time apart."""

    def __init__(self) -> None:
        self.waited = 0.0
        self.call = cln.call

    def __call__(self, method: str, timeout: float | None = None, **params: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.call(method, timeout, **params)
        finally:
            self.waited += time.perf_counter() - started


def measure(payer: ProcessDouble, payee: ProcessDouble) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"direct": [], "wallet": [], "own": []}
    clock = NodeClock()
    cln.call = clock  # type: ignore[assignment]
    for n in range(PAYMENTS):
        direct = payee.rpc.invoice(AMOUNT, f"direct-{n}", "bench")["bolt11"]
        journal = payee.rpc.invoice(AMOUNT, f"wallet-{n}", "bench")["bolt11"]
        started = time.perf_counter()
        payer.rpc.xpay(direct, maxfee=1000)
        times["direct"].append((time.perf_counter() - started) * 1000)
        order = services.PayOrder(bolt11=journal, purpose=f"bench-{n}", caller="agent:bench",
                                  max_amount_msat=AMOUNT, max_fee_msat=1000)  # fmt: skip
        clock.waited, started = 0.0, time.perf_counter()
        payment = services.pay(order)
        times["wallet"].append((time.perf_counter() - started) * 1000)
        times["own"].append(times["wallet"][-1] - clock.waited * 1000)
        assert payment.state == "complete" and payment.proof_holds
    return times


def main() -> None:
    call_command("migrate", verbosity=0)
    budgets.budget_set("household", "month", 10**12)
    budgets.budget_set("caller", "day", 10**11, caller="agent:bench")
    budgets.budget_set("request", "each", 10**6)
    directory = Path(tempfile.mkdtemp(prefix="sovereign-bench-lightning-"))
    with (
        ProcessDouble(directory / "payee") as payee,
        ProcessDouble(directory / "payer") as payer,
    ):
        payer.connect(payee, amount_sat=10_000_000)
        settings.LIGHTNING_RPC = str(payer.rpc_file)
        services.pay(services.PayOrder(bolt11=payee.rpc.invoice(AMOUNT, "warm", "warm")["bolt11"],
                                       purpose="warm-up", caller="agent:bench",
                                       max_amount_msat=AMOUNT))  # fmt: skip
        times = measure(payer, payee)
    load = os.getloadavg()[0]  # 2 cores shared: how busy the machine was while measuring
    direct, wallet, own = (statistics.median(times[k]) for k in ("direct", "wallet", "own"))
    p95 = {k: statistics.quantiles(v, n=20)[-1] for k, v in times.items()}
    figures = {
        "payments": PAYMENTS,
        "direct_median_ms": round(direct, 2),
        "wallet_median_ms": round(wallet, 2),
        "overhead_median_ms": round(wallet - direct, 2),
        "own_median_ms": round(own, 2),
        "direct_p95_ms": round(p95["direct"], 2),
        "wallet_p95_ms": round(p95["wallet"], 2),
        "target_overhead_ms": 5,
        "met": wallet - direct <= 5,
        "load_average": round(load, 2),
    }
    write_section("Wallet: paying through the journal against a direct xpay", render(figures))
    print(json.dumps(figures))


def render(f: dict[str, object]) -> str:
    return f"""
{f["payments"]} payments of 10 sat each way, alternating, through a lightningd double running as
its own process, as lightningd does, paying a second one (the nodes' own time is in both
columns; the double decodes each invoice once, with pyln-proto's slow pure-Python signature
check, and remembers it, as either path needs it).
The wallet's path: `decode` and the checks, budgets (household, caller, price limit)
checked and the pending row written in one serialised SQLite transaction, `xpay`, the proof
checked and the row settled.

| path | median | p95 |
|---|---|---|
| direct `xpay` (pyln-client) | {f["direct_median_ms"]} ms | {f["direct_p95_ms"]} ms |
| Sovereign's `pay()` | {f["wallet_median_ms"]} ms | {f["wallet_p95_ms"]} ms |

Overhead per payment at the median: **{f["overhead_median_ms"]} ms** (target: at most 5 ms;
{"met" if f["met"] else "not met"}). Of the wallet's path, {f["own_median_ms"]} ms at the median is
its own work (the journal, the budgets, the checks); the rest is waiting for the node, which
answers one more call than the direct path (`decode`, which the checks need). Both doubles
and this script share 2 cores, and after each payment the doubles write their state to disk
while the next one is timed, so the difference of medians carries some of their time too.
The 1-minute load average at the end was {f["load_average"]} (2 cores): compare runs by it.

Where the wallet's own time went (cProfile and timers around each step, 100–150 payments):
the budget check built its sum with the ORM, one `Case`/`Sum(filter=...)` per budget, compiled
afresh for every payment (about 1.5 ms of expression resolving and copying, the largest single
part), and summed the whole journal, every period, every failed row (a table scan that grew
with each payment: 2 ms at 3,600 rows). It is now one SQL statement written once, reading
only this period's live rows through the `created_at` index, and it also answers which other
purpose holds the invoice (the check against paying one invoice twice), so that costs no
query of its own. Measured on 2026-11-29 while another build kept the cores busy, the code
before and after run back to back: the reservation alone went from 3.4 to 1.7 ms; at a load
average of 7 to 9, the wallet's own time at the median went from 18.7 to 4.1 ms; at about 1.5,
from 6.2 to 4.2–4.9 ms, and the overhead from 7.8–8.7 to 4.9–6.6 ms. What remains of the
overhead besides the wallet's own work is the node's answer to `decode`, one more call on a
new socket: well under a millisecond on a quiet machine, many when the doubles wait for a core.
"""


if __name__ == "__main__":
    main()
