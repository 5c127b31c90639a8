"""How many cores the rest of the machine leaves idle: the engine's thread count, automatic.

llama.cpp's threads meet at a barrier after every operation of every step, spinning while
they wait. When another busy process (bitcoind validating blocks, say) takes a core, the thread
the kernel parks for it holds every other one up, and a stream on all the cores crawls, slower
than on the idle cores alone (bench/threads.py). So the engine looks at /proc/stat about once a
second and gives llama.cpp the cores other processes left idle meanwhile, at least one: all of
them when the box is otherwise quiet. Its own work is not counted as someone else's.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import NamedTuple, Protocol

logger = logging.getLogger("sovereign.engine")

INTERVAL_SECONDS = 1.0
STALE_SECONDS = 3.0


class Sample(NamedTuple):
    total: int  # clock ticks of every core, busy or idle
    busy: int  # of those, neither idle nor waiting for a disk
    ours: int  # of those, this process's (all its threads)


class ThreadSetter(Protocol):
    def set_threads(self, single: int, batch: int) -> None: ...


def sample() -> Sample | None:
    """The machine's and this process's CPU ticks so far; None where /proc is not Linux's."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        ours = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    except (OSError, ValueError, IndexError):
        return None
    total = sum(ticks)
    return Sample(total, total - ticks[3] - ticks[4], int(ours[0]) + int(ours[1]))


def idle_cores(before: Sample, after: Sample, cores: int) -> int:
    """The cores that processes other than this one left idle between two samples (at least
    one, at most all)."""
    others = (after.busy - before.busy) - (after.ours - before.ours)
    busy_cores = cores * max(0, others) / max(1, after.total - before.total)
    return min(cores, max(1, cores - round(busy_cores)))


class IdleCores:
    """Looks at /proc/stat at most once an interval, and gives a generator the idle cores."""

    def __init__(self, cores: int | None = None, *, enabled: bool = True) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.threads = self.cores
        self._last = sample() if enabled else None  # None: leaves the threads alone
        self._at = time.monotonic()

    def adjust(self, generator: ThreadSetter | None) -> None:
        """Called before every step and while idle (generator None or not running), so the
        count is fresh when a request arrives: a step on more threads than idle cores can
        take seconds, and nothing changes the count until it ends."""
        if self._last is None:
            return
        elapsed = time.monotonic() - self._at
        now = sample() if elapsed >= INTERVAL_SECONDS else None
        if now is not None:
            if elapsed <= STALE_SECONDS:  # an average over a longer time says little of now
                threads = idle_cores(self._last, now, self.cores)
                if threads != self.threads:
                    logger.debug("llama.cpp threads: %d (of %d cores)", threads, self.cores)
                self.threads = threads
            self._last, self._at = now, time.monotonic()
        if generator is not None:
            # Every step, not only on a change: a model loaded meanwhile starts on all cores.
            generator.set_threads(self.threads, self.threads)
