"""The engine's automatic thread count: the cores other processes leave idle."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from apps.inference.batching import BatchedGenerator
from apps.inference.cpu_share import INTERVAL_SECONDS, IdleCores, Sample, idle_cores
from apps.inference.services import bundled_model_file

BUSY_LOOP = "while True: pass"


def test_the_engines_own_work_is_not_counted_as_someone_elses() -> None:
    # Two cores for 100 ticks each: all of them busy, and all of that the engine's own.
    assert idle_cores(Sample(0, 0, 0), Sample(200, 200, 200), cores=2) == 2


def test_the_cores_other_processes_keep_busy_are_left_to_them_but_one() -> None:
    assert idle_cores(Sample(0, 0, 0), Sample(400, 100, 0), cores=4) == 3
    assert idle_cores(Sample(0, 0, 0), Sample(400, 400, 0), cores=4) == 1


def test_a_busy_neighbour_on_every_core_leaves_the_engine_one_thread_from_its_first_step() -> None:
    cores = os.cpu_count() or 1
    neighbours = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(cores)]
    try:
        share = IdleCores()
        time.sleep(INTERVAL_SECONDS + 0.2)
        share.adjust(None)  # the engine looks while it waits for a request, with no model
        with BatchedGenerator(str(bundled_model_file()), slots=1, context_per_slot=64) as generator:
            assert generator.thread_counts == (cores, cores)
            share.adjust(generator)
            assert generator.thread_counts == (1, 1)
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()


def test_a_thread_count_set_by_hand_is_left_alone() -> None:
    with BatchedGenerator(str(bundled_model_file()), slots=1, context_per_slot=64) as generator:
        share = IdleCores(enabled=False)
        generator.set_threads(3, 3)
        time.sleep(INTERVAL_SECONDS + 0.2)
        share.adjust(generator)
        assert generator.thread_counts == (3, 3)
