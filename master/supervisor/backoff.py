"""Restart throttling: a worker that keeps crashing is restarted later and later."""
from __future__ import annotations


class Backoff:
    """Exponential restart delays for one worker slot.

    The first crash restarts at once; each further crash of a worker that lived less
    than `reset_after` seconds doubles the delay from `initial` up to `cap`. A worker that
    stayed up `reset_after` seconds earns a fresh start. So a crash loop costs a few
    spawns a minute, never a core.
    """

    def __init__(self, initial: float = 0.1, factor: float = 2.0, cap: float = 15.0, reset_after: float = 30.0) -> None:
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self.reset_after = reset_after
        self.failures = 0

    def next_delay(self, uptime: float) -> float:
        """Record a crash after `uptime` seconds; return how long to wait before respawning."""
        if uptime >= self.reset_after:
            self.failures = 0
        delay = 0.0 if self.failures == 0 else min(self.cap, self.initial * self.factor ** (self.failures - 1))
        self.failures += 1
        return delay
