"""The watchdog: a worker silent for longer than the timeout has its stacks logged, then is killed.

Heartbeats come from a greenlet, so they stop exactly when the worker's event loop is stuck
(a request spinning on the CPU, a deadlock, SIGSTOP) and keep coming while requests only
wait on I/O. The exit path then replaces the worker, counted under "timeout".
"""
from __future__ import annotations

import logging
import signal
from typing import Any

from ..primary.worker import LISTENING

log = logging.getLogger("master.arbiter")

STACK_DUMP_WINDOW = 0.5  # how long a timed-out worker gets to write its stacks before SIGKILL


def overdue(workers: list[Any], now: float, timeout: float) -> list[tuple[Any, float]]:
    """Listening workers not yet being killed whose last heartbeat is older than `timeout`."""
    return [(w, now - w.last_heartbeat) for w in workers
            if w.state == LISTENING and not w.kill_reason and now - w.last_heartbeat > timeout]


class Watchdog:
    """Checks heartbeats every `interval` seconds while the arbiter runs."""

    def __init__(self, arbiter: Any, timeout: float, interval: float) -> None:
        self.arbiter = arbiter
        self.timeout = timeout
        self.interval = interval

    def start(self) -> None:
        """Begin checking (nothing to do with a timeout of 0)."""
        if self.timeout:
            self.arbiter.loop.call_later(self.interval, self._tick, ref=False)

    def _tick(self) -> None:
        if self.arbiter.state == "running":
            workers = list(self.arbiter.primary.workers.values())
            for worker, silent_for in overdue(workers, self.arbiter.loop.clock(), self.timeout):
                self.kill(worker, silent_for)
        self.arbiter.loop.call_later(self.interval, self._tick, ref=False)

    def kill(self, worker: Any, silent_for: float) -> None:
        """Log the worker's stacks, then SIGKILL it; the exit path replaces it."""
        log.error("Worker %s timed out (no heartbeat for %.1f s): dumping its stacks, then SIGKILL",
                  worker.pid, silent_for)
        worker.signal(signal.SIGUSR1, reason="timeout")  # faulthandler: every thread's stack to stderr
        worker.signal(signal.SIGCONT)  # a stopped worker must run to write them
        self.arbiter.loop.call_later(STACK_DUMP_WINDOW, lambda: worker.is_dead() or worker.signal(signal.SIGKILL))
