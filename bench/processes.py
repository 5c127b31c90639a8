"""What the machine and a bench's processes are doing, read from /proc: whether other people's
work disturbed a measurement, and the CPU and memory of the processes measured."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.instances import descendants

QUIET = 0.10  # a measurement counts when other processes took under 10 % of the CPU meanwhile
QUIET_WAIT = 20  # seconds to wait for such a moment before measuring anyway
TRIES = 3
T = TypeVar("T")


class Others:
    """The share of the machine's CPU that processes outside this bench used since creation.

    Other people's tests share this machine; a measurement they disturbed is taken again."""

    def __init__(self) -> None:
        self.bench = os.getpid()
        self.start = self._sample()

    def _sample(self) -> tuple[int, int, int]:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        total, idle = sum(ticks), ticks[3] + ticks[4]  # idle and iowait
        ours = 0
        for pid in (self.bench, *descendants(self.bench)):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime and stime of all its threads, and of its children that have ended
            ours += sum(int(ticks) for ticks in stat[11:15])
        return total, total - idle, ours

    def share(self) -> float:
        total, busy, ours = self._sample()
        return max(0, busy - self.start[1] - (ours - self.start[2])) / max(1, total - self.start[0])


def wait_for_quiet() -> None:
    deadline = time.monotonic() + QUIET_WAIT
    while time.monotonic() < deadline:
        others = Others()
        time.sleep(1)
        if others.share() < QUIET:
            return


def quietly(run: Callable[[], T], shares: list[float]) -> T:
    """run(), again (up to TRIES times) while other processes took QUIET or more of the CPU
    meanwhile; the least disturbed result."""
    best: tuple[float, T] | None = None
    for _ in range(TRIES):
        wait_for_quiet()
        others = Others()
        result = run()
        share = others.share()
        if best is None or share < best[0]:
            best = (share, result)
        if share < QUIET:
            break
    assert best is not None
    shares.append(best[0])
    return best[1]


def cpu_seconds(threads: list[tuple[int, int | None]]) -> float:
    total = 0
    for pid, thread in threads:
        tasks = Path(f"/proc/{pid}/task")
        for task in [tasks / str(thread)] if thread else list(tasks.iterdir()):
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])  # nanoseconds
    return total / 1e9


def vm_hwm(pid: int) -> int:
    """The process's peak resident memory (file-backed pages such as the mapped weights too)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"No VmHWM for process {pid}")


def weight_mappings(pids: list[int], model_path: str) -> tuple[int, int]:
    """How much of the model file these processes map (a second copy would show as more than
    the file's size), and how much of it is resident. The file is found by its inode: the
    node reaches it through a hard link in its data directory."""
    inode = str(os.stat(model_path).st_ino)
    mapped, resident = 0, 0
    for pid in pids:
        current = False
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header
                current = fields[4] == inode
                if current:
                    start, end = (int(a, 16) for a in fields[0].split("-"))
                    mapped += end - start
            elif current and fields[0] == "Rss:":
                resident += int(fields[1]) * 1024
    return mapped, resident
