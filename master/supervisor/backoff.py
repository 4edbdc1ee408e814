"""Restart throttling: a worker that keeps crashing is restarted later and later."""
from __future__ import annotations


class Backoff:
    """Exponential restart delays for one worker slot.

    The first crash restarts at once; each further crash of an unstable worker doubles the
    delay from `initial` up to `cap`. A worker is stable, and its death earns a fresh start,
    once it has listened and lived `stable_after` seconds (PM2's min_uptime), or lived
    `reset_after` seconds whatever it did. A crash loop is a worker that dies before it can
    serve: it costs a few spawns a minute, never a core. A worker that served and was then
    killed (by the OOM killer, an operator, a chaos test) is replaced at once, however often
    that happens, as gunicorn does: waiting would only leave its share of the load unserved.
    """

    def __init__(self, initial: float = 0.1, factor: float = 2.0, cap: float = 15.0, reset_after: float = 30.0,
                 stable_after: float = 1.0) -> None:
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self.reset_after = reset_after
        self.stable_after = stable_after
        self.failures = 0

    def next_delay(self, uptime: float, listened: bool = False) -> float:
        """Record a crash after `uptime` seconds (`listened`: it had been serving); how long to wait
        before respawning."""
        if uptime >= self.reset_after or (listened and uptime >= self.stable_after):
            self.failures = 0
        delay = 0.0 if self.failures == 0 else min(self.cap, self.initial * self.factor ** (self.failures - 1))
        self.failures += 1
        return delay
