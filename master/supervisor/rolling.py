"""A zero-downtime rolling restart: for each worker, start a successor, wait until it listens,
drain the old one, wait until it has gone, then the next. A successor that cannot boot
stops the restart, and the old workers keep serving.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

log = logging.getLogger("master.arbiter")

READY_TIMEOUT = 60.0  # a new worker must be listening within this, or the restart stops


class RollingRestart:
    """The restart in progress (at most one), driven by the arbiter's events."""

    def __init__(self, arbiter: Any) -> None:
        self.arbiter = arbiter
        self.queue: deque[Any] = deque()
        self.status: dict[str, Any] = {"state": "idle"}

    @property
    def running(self) -> bool:
        """Whether a restart is under way."""
        return self.status.get("state") == "running"

    def start(self, workers: list[Any], generation: int) -> int:
        """Queue `workers` for replacement, oldest id first; returns how many."""
        self.queue = deque(sorted(workers, key=lambda w: w.id))
        self.status = {"state": "running", "generation": generation, "total": len(self.queue),
                       "replaced": 0, "started": time.time()}
        log.info("Rolling restart: replacing %d workers one at a time", len(self.queue))
        self.arbiter.loop.call_soon(self.next)
        return len(self.queue)

    def next(self) -> None:
        """Replace the next worker still serving, or finish."""
        if not self.running or self.arbiter.state != "running":
            return
        while self.queue:
            old = self.queue.popleft()
            if old.is_dead() or old.retire_reason:
                continue
            successor = self.arbiter.replace_worker(old, "reload")
            if successor is None:
                continue
            successor.generation = self.status["generation"]
            self.status["current"] = {"old": old.pid, "new": successor.pid}
            self.arbiter.loop.call_later(READY_TIMEOUT, self._ready_timeout, successor)
            return
        self.status.update(state="done", finished=time.time())
        self.status.pop("current", None)
        log.info("Rolling restart done: %d workers replaced", self.status.get("replaced", 0))

    def step_done(self) -> None:
        """The old worker of the current step has exited: on to the next."""
        self.status["replaced"] = self.status.get("replaced", 0) + 1
        self.next()

    def failed(self, why: str) -> None:
        """A successor could not boot: stop here, the remaining old workers keep serving."""
        self.status.update(state="failed", error=why, finished=time.time())
        self.status.pop("current", None)
        self.queue.clear()

    def _ready_timeout(self, successor: Any) -> None:
        if successor.is_dead() or successor.ever_listened or not self.running:
            return
        log.error("New worker %s not listening after %.0f s: rolling restart stopped", successor.pid, READY_TIMEOUT)
        successor.kill("SIGKILL")
