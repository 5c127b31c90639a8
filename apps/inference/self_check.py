"""The engine's check of llama.cpp on this processor, before it takes any request.

One tiny decode of the bundled model runs in a child process, with the engine's own thread
count. llama.cpp built with instructions this processor cannot run (Intel AMX code is the case
seen: `tilezero` on a worker thread) kills that child with SIGILL; the engine then refuses every
request with one clear sentence instead of dying on each and being restarted for ever.

Run as `python -m apps.inference.self_check MODEL_PATH THREADS` (no Django needed).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger("sovereign.engine")

ROOT = Path(__file__).resolve().parent.parent.parent
REBUILD_HINT = "Rebuild it with: make rebuild-llama (the README's Processors section says why)."
CHECK_TIMEOUT_SECONDS = 120.0
# Signals that say the library itself is broken (an OOM kill or a stop says nothing of it).
BROKEN_LIBRARY_SIGNALS = {
    signal.SIGILL: "an illegal instruction (SIGILL), so it was built with instructions this "
    "processor cannot run",
    signal.SIGSEGV: "a segmentation fault (SIGSEGV)",
    signal.SIGBUS: "a bus error (SIGBUS)",
    signal.SIGFPE: "an arithmetic fault (SIGFPE)",
    signal.SIGABRT: "an abort (SIGABRT)",
}


@dataclass(frozen=True)
class SelfCheck:
    # passed: a token was decoded; broken: llama.cpp crashes here; unknown: the check could
    # not tell (no model to try, a timeout, an error of its own): the engine serves as usual.
    outcome: Literal["passed", "broken", "unknown"]
    message: str = ""


def check_llama(
    model_path: Path | None, threads: int | None, *, program: list[str] | None = None
) -> SelfCheck:
    """Decode one token of model_path in a child process and say what became of it."""
    if model_path is None:
        return SelfCheck("unknown", "No bundled model to check llama.cpp with.")
    argv = program or [sys.executable, "-m", "apps.inference.self_check"]
    argv = [*argv, str(model_path), str(threads or 0)]
    try:
        child = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        return SelfCheck("unknown", f"The check took longer than {CHECK_TIMEOUT_SECONDS:.0f} s.")
    return _outcome(child.returncode, child.stderr)


def _outcome(returncode: int, stderr: str) -> SelfCheck:
    if returncode == 0:
        return SelfCheck("passed")
    if returncode < 0 and -returncode in BROKEN_LIBRARY_SIGNALS:
        what = BROKEN_LIBRARY_SIGNALS[signal.Signals(-returncode)]
        return SelfCheck(
            "broken",
            f"The model engine is off: llama.cpp died of {what} on its first decode here. "
            f"{REBUILD_HINT}",
        )
    last_line = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {returncode}"
    return SelfCheck("unknown", f"The check could not run: {last_line}")


def _tiny_decode(model_path: str, threads: int) -> None:
    from apps.inference.batching import BatchedGenerator, SamplingParams

    generator = BatchedGenerator(model_path, slots=1, context_per_slot=64, threads=threads or None)
    try:
        generator.add("self-check", generator.tokenize("Hello"), SamplingParams(max_tokens=2))
        while generator.busy:
            generator.step()
    finally:
        generator.close()


if __name__ == "__main__":
    _tiny_decode(sys.argv[1], int(sys.argv[2]))
