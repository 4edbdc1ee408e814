"""The workers' CPU is counted over wrk's own window, not over the wrk process's life (loadtest/bench.py)."""

import os
import threading
import time

from loadtest import bench, wrk


def busy_then_idle(busy_s: float, idle_s: float):
    def measure():
        until = time.monotonic() + busy_s
        while time.monotonic() < until:
            pass
        threading.Event().wait(idle_s)  # a load generator that lingers after its window, the workers idle
        return "done"
    return measure


def test_cpu_and_wall_stop_at_the_window():
    result, cpu, elapsed = bench.worker_cpu_over([os.getpid()], busy_then_idle(0.6, 0.8), window_s=0.6)
    assert result == "done"
    assert 0.55 <= elapsed < 0.9  # the window, not the 1.4 s measure() took
    _, cpu_all, elapsed_all = bench.worker_cpu_over([os.getpid()], busy_then_idle(0.6, 0.8))
    assert elapsed_all >= 1.4 and cpu / elapsed > cpu_all / elapsed_all


def test_a_measure_shorter_than_the_window_counts_to_its_end():
    _, _, elapsed = bench.worker_cpu_over([os.getpid()], busy_then_idle(0.1, 0.0), window_s=5)
    assert elapsed < 1.0


def test_the_window_is_what_wrk_counts():
    assert wrk.window_s(8.0) == 8 and wrk.window_s(0.4) == 1 and wrk.window_s(2.6) == 3
