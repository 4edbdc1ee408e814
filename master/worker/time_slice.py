"""Time slices for requests that compute: one that keeps the CPU for a slice lets the others run.

gevent switches greenlets only where one waits (a socket, a sleep). A request that computes for
10 ms holds its worker for those 10 ms, and every request that arrived there meanwhile waits
behind it, though each would take 0.1 ms. Threads are preempted by the GIL every 5 ms (gunicorn
gthread, granian); greenlets are not. So a profiling timer (ITIMER_PROF: it counts only the CPU
this process uses, so an idle worker is never woken) rings every `slice` of CPU (the kernel
rounds it up to its tick, 4 ms at HZ=250). A ring that finds a request in the app's own code
makes it yield to the hub: what is ready runs, then the request goes on where it stopped.

Never inside the engine, gevent or greenlet themselves: their state is not reentrant, so a ring
that lands there waits for the next one. The app sees what threads would give it: it can be
interrupted between any two lines of its own code, and the monkey-patched locks make a preempted
lock holder safe (a greenlet that wants the lock waits for it cooperatively).

The decision is `should_yield`, a pure function; `TimeSlicer` is its wiring to the timer.
"""
from __future__ import annotations

import atexit
import signal
from typing import Any

import gevent
from greenlet import getcurrent

YIELD_FOR = 1e-6  # sleep(0) would only run callbacks; any timer makes the loop poll for I/O first
# Modules whose frames are never interrupted: the engines, the worker's own plumbing, gevent.
NOT_HERE = ("master.", "gevent", "greenlet")


def should_yield(current: Any, in_app: set, module: str) -> bool:
    """Whether the greenlet the timer interrupted should give the CPU away now.

    It must be serving a request (`in_app`) and be in code that is not ours or gevent's. A ring
    comes only after a slice of this process's CPU, so a request that yields has either computed
    for that long or is at most one short yield away from finishing.
    """
    return current in in_app and not module.startswith(NOT_HERE)


class TimeSlicer:
    """The worker's slicing timer; engines mark the greenlets that are running app code."""

    def __init__(self, slice_s: float) -> None:
        self.slice_s = slice_s
        self.in_app: set = set()  # greenlets inside the app for a request right now
        self.yields = 0  # how many times a request gave the CPU away (for tests and logs)
        self.installed = False

    def install(self) -> bool:
        """Start the timer (a no-op with a slice of 0, or outside the main thread)."""
        if self.slice_s <= 0:
            return False
        try:
            signal.signal(signal.SIGPROF, self._ring)
        except ValueError:  # not the main thread: nothing to slice here
            return False
        signal.siginterrupt(signal.SIGPROF, False)  # restart system calls a ring lands in, never EINTR
        signal.setitimer(signal.ITIMER_PROF, self.slice_s, self.slice_s)
        if not self.installed:
            atexit.register(self.uninstall)  # a ring during interpreter shutdown would kill the process
        self.installed = True
        return True

    def uninstall(self) -> None:
        """Stop the timer (before exec, or when the worker stops serving)."""
        if self.installed:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            signal.signal(signal.SIGPROF, signal.SIG_DFL)
            self.installed = False

    def enter(self) -> Any:
        """The calling greenlet starts running app code; pass the result to leave()."""
        current = getcurrent()
        self.in_app.add(current)
        return current

    def leave(self, current: Any) -> None:
        """That greenlet is done with the app for this request."""
        self.in_app.discard(current)

    def _ring(self, _signum: int, frame: Any) -> None:
        current = getcurrent()
        module = frame.f_globals.get("__name__", "") if frame is not None else "master."
        if not should_yield(current, self.in_app, module):
            return
        self.yields += 1
        gevent.sleep(YIELD_FOR)  # a timer, so the loop polls: what is ready runs, then this request
