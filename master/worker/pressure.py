"""Say so in the log when a worker runs short of descriptors or connections, without flooding it.

Under an attack the same condition repeats thousands of times a second; one line per kind
per INTERVAL, with a count of what it left out, keeps the log readable and cheap. Every
engine uses it for the same conditions: the connection cap reached, accept failing with
EMFILE/ENFILE, a handoff record that lost descriptors (MSG_CTRUNC), refused requests.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

INTERVAL = 10.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class PressureLog:
    """At most one line per key per interval; the next line says how many were left out."""

    def __init__(self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic,
                 write: Callable[[str], None] = _stderr, prefix: str | None = None) -> None:
        self.interval = interval
        self.clock = clock
        self.write = write
        self.prefix = prefix if prefix is not None else f"[worker {os.environ.get('PYCLUSTER_WORKER_ID', os.getpid())}]"
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def warn(self, key: str, message: str) -> bool:
        """Log `message` unless a line of this key went out less than an interval ago; True if logged."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        suffix = f" ({dropped} more like this in the last {now - last:.0f} s)" if dropped and last is not None else ""
        self.write(f"{self.prefix} {message}{suffix}")
        return True


_shared: PressureLog | None = None


def shared() -> PressureLog:
    """This process's PressureLog (made on first use, never at import time)."""
    global _shared
    if _shared is None:
        _shared = PressureLog()
    return _shared
