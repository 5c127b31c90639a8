"""The supervisor behind `manage.py run`: restarts crashes, stops everything, leaves nothing."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovereign.supervisor import Program, StartupFailed, Supervisor
from tests.instances import descendants, is_running, wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# A program that forks a child of its own and ignores SIGTERM: the worst case to stop.
STUBBORN = [
    sys.executable,
    "-c",
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "os.fork(); time.sleep(600)",
]


@pytest.fixture
def running() -> Iterator[list[tuple[Supervisor, threading.Thread]]]:
    started: list[tuple[Supervisor, threading.Thread]] = []
    yield started
    for supervisor, thread in started:
        supervisor.stopping.set()
        thread.join(timeout=30)


def start(
    running: list[tuple[Supervisor, threading.Thread]], *programs: Program, stop_timeout: float = 5
) -> Supervisor:
    supervisor = Supervisor(list(programs), stop_timeout=stop_timeout)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    running.append((supervisor, thread))
    wait_for(lambda: all(p.process for p in programs), 10, "the programs to start")
    return supervisor


def test_it_restarts_a_program_that_crashes(running: list) -> None:
    program = Program("sleeper", SLEEPER)
    start(running, program)
    first = program.process
    assert first is not None

    os.kill(first.pid, signal.SIGKILL)

    wait_for(lambda: program.process not in (None, first), 10, "a restart")
    assert program.starts == 2
    assert program.process is not None and is_running(program.process.pid)


def test_stopping_ends_every_process_even_stubborn_ones(running: list) -> None:
    programs = [Program("sleeper", SLEEPER), Program("stubborn", STUBBORN)]
    supervisor = start(running, *programs, stop_timeout=1)
    wait_for(lambda: descendants(os.getpid()) and len(all_children(programs)) >= 3, 10, "forks")
    everything = all_children(programs)

    supervisor.stopping.set()
    running[0][1].join(timeout=30)

    # SIGKILL is delivered asynchronously: give the kernel a moment to finish the job.
    wait_for(lambda: not any(is_running(pid) for pid in everything), 5, "every process to end")


def test_a_program_that_fails_at_start_is_not_restarted(tmp_path: Path) -> None:
    failing = Program("web", [sys.executable, "-c", "raise SystemExit(3)"])
    sleeper = Program("worker", SLEEPER)
    supervisor = Supervisor([failing, sleeper], stop_timeout=5)

    with pytest.raises(StartupFailed, match=r"web stopped at start \(exit code 3\)"):
        supervisor.run()

    assert failing.starts == 1
    assert sleeper.process is None


def all_children(programs: list[Program]) -> set[int]:
    pids = {p.process.pid for p in programs if p.process}
    return pids | {child for pid in pids for child in descendants(pid)}
