"""Progress for long runs (`make bench`, `make chaos`): which step runs, time elapsed, time left.

Each finished step prints one numbered line, as before. While a step runs, a status line says
what it is, how long it has run and about how long the whole run has left. On a terminal that
line redraws itself in place twice a second; in a log (CI, a pipe) it is printed when the step
starts and every QUIET_S seconds after, so a log never goes quiet for long and never fills
with redraws.

Time left comes from each step's expected seconds when the caller knows them (chaos does:
its scenarios have planned lengths), corrected by how the finished steps compared with their
plan; otherwise from the average of the finished steps.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

TICK_S = 0.5
QUIET_S = 15.0


def clock_text(seconds: float | None) -> str:
    """72.4 -> '1m12s'; None -> '?'."""
    if seconds is None:
        return "?"
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Numbered step lines and a live status line; close() (or `with`) stops the ticker."""

    def __init__(self, total: int, expected: list[float] | None = None, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, live: bool | None = None) -> None:
        self.total, self.done = total, 0
        self.expected = list(expected) if expected else None
        self.stream = stream or sys.stdout
        self.clock = clock
        self.live = self.stream.isatty() if live is None else live
        self.t0 = clock()
        self.current: str | None = None
        self.step_t0 = self.t0
        self._finished_s = 0.0          # seconds the finished steps took
        self._last_status = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the runs call ----------------------------------------------------------------
    def start(self, what: str) -> None:
        """A step begins (or the running one gets a new label: its time goes on): show it."""
        with self._lock:
            if self.current is None:
                self.step_t0 = self.clock()
            self.current = what
            self._last_status = float("-inf")
            self._status()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def step(self, text: str) -> None:
        """A step finished, with its result line."""
        with self._lock:
            now = self.clock()
            if self.current is not None:
                self._finished_s += now - self.step_t0
            self.done += 1
            self.current = None
            self._write(f"[{self.done:>3}/{self.total}] {now - self.t0:6.1f}s  {text}")

    def note(self, text: str) -> None:
        """A line that is not a step."""
        with self._lock:
            self._write(f"          {self.clock() - self.t0:6.1f}s  {text}")

    def close(self) -> None:
        """Stop the ticker and clear the status line."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2)
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")
                self.stream.flush()

    # -- the estimate ------------------------------------------------------------------------
    def remaining(self) -> float | None:
        """Seconds the whole run has left, or None before there is anything to go by."""
        now = self.clock()
        running = now - self.step_t0 if self.current is not None else 0.0
        if self.expected:
            planned_done = sum(self.expected[: self.done])
            # How the finished steps compared with their plan (start-ups, slow machines), within reason.
            factor = min(3.0, max(0.5, self._finished_s / planned_done)) if self.done and planned_done else 1.0
            current = self.expected[self.done] if self.done < len(self.expected) and self.current else 0.0
            later = sum(self.expected[self.done + (1 if self.current else 0):])
            return max(0.0, current * factor - running) + later * factor
        if not self.done:
            return None
        average = self._finished_s / self.done
        left = self.total - self.done
        return max(0.0, left * average - running)

    def status_line(self) -> str:
        """What the run is doing now, e.g. '▶ [ 4/12] worker-kill · 12s in step · 1m30s elapsed · ~2m10s left'."""
        now = self.clock()
        left = self.remaining()
        return (f"▶ [{self.done + 1:>3}/{self.total}] {self.current} · {clock_text(now - self.step_t0)} in step · "
                f"{clock_text(now - self.t0)} elapsed · ~{clock_text(left)} left")

    # -- output --------------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        if self.current is not None and self.live:
            self.stream.write(self.status_line())
        self.stream.flush()

    def _status(self) -> None:
        if self.current is None:
            return
        now = self.clock()
        if self.live:
            self.stream.write("\r\033[K" + self.status_line())
        elif now - self._last_status >= QUIET_S:
            self.stream.write(self.status_line() + "\n")
        else:
            return
        self._last_status = now
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                self._status()
