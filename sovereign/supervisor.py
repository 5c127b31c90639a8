"""Runs Sovereign's processes as one: starts them, restarts one that crashes, stops them all.

Each program runs in its own process group, so stopping it also stops what it forked
(the worker's pool processes). Children are told by the kernel to stop if the supervisor
dies without cleaning up, and the supervisor stops when its own parent (`make run`) goes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

logger = logging.getLogger("sovereign.supervisor")

# A program that exits with an error this soon after its first start is misconfigured
# (a port in use, a bad setting), not crashing: restarting it would only repeat the error.
START_GRACE_SECONDS = 5.0
# Running this long without a crash resets the restart delay.
STABLE_SECONDS = 30.0
MAX_RESTART_DELAY = 30.0
_PR_SET_PDEATHSIG = 1


class StartupFailed(Exception):
    pass


@dataclass
class Program:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    restart_delay: float = 1.0
    restart_at: float = field(default=0.0)


def _stop_with_parent() -> None:
    """In the child, before exec: ask for SIGTERM when the supervisor dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, programs: list[Program], *, stop_timeout: float = 15.0) -> None:
        self.programs = programs
        self.stop_timeout = stop_timeout
        self.stopping = threading.Event()

    def run(self) -> None:
        """Run until SIGINT or SIGTERM, or until the parent goes; then stop everything."""
        parent = os.getppid()
        previous_handlers = self._install_signal_handlers()
        try:
            for program in self.programs:
                self._start(program)
            while not self.stopping.wait(0.2):
                if os.getppid() != parent:
                    logger.info("The parent process is gone; stopping.")
                    break
                for program in self.programs:
                    self._watch(program)
        finally:
            self.stop_all()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may; elsewhere, set .stopping to stop
        return {
            signum: signal.signal(signum, self._ask_to_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }

    def _ask_to_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _start(self, program: Program) -> None:
        program.process = subprocess.Popen(
            program.argv, start_new_session=True, preexec_fn=_stop_with_parent
        )
        program.started_at = time.monotonic()
        program.starts += 1
        logger.info("Started %s (pid %s).", program.name, program.process.pid)

    def _watch(self, program: Program) -> None:
        now = time.monotonic()
        if program.process is not None and program.process.poll() is not None:
            code = program.process.returncode
            uptime = now - program.started_at
            program.process = None
            if program.starts == 1 and uptime < START_GRACE_SECONDS and code > 0:
                raise StartupFailed(f"{program.name} stopped at start (exit code {code}).")
            program.restart_delay = (
                1.0
                if uptime > STABLE_SECONDS
                else min(program.restart_delay * 2, MAX_RESTART_DELAY)
            )
            program.restart_at = now + program.restart_delay
            logger.warning(
                "%s exited (code %s); restarting in %.0f s.",
                program.name,
                code,
                program.restart_delay,
            )
        if program.process is None and now >= program.restart_at:
            self._start(program)

    def stop_all(self) -> None:
        running = [p for p in self.programs if p.process is not None]
        for program in running:
            # Only the program's main process: it stops its own children in order.
            assert program.process is not None
            program.process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for program in running:
            assert program.process is not None
            try:
                program.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it.", program.name)
            # Also reaps what the program forked and left behind in its group.
            self._signal_group(program, signal.SIGKILL)
            program.process.wait()
            program.process = None

    @staticmethod
    def _signal_group(program: Program, signum: int) -> None:
        assert program.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(program.process.pid, signum)
