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

Who yields: a request on a connection that keeps computing. Each keep-alive connection counts
its streak: how many of its requests in a row computed (the timer rang at least COMPUTED times
in each). A ring makes a request yield when its connection's streak has reached STREAK, or when
the request itself has used LONG slices. So a client that keeps sending 10 ms requests yields to
the clients that send 0.1 ms ones, as a thread scheduler favours the threads that sleep. And
where every client sends the same mix (a slow request now and then among fast ones), no client
is a computing one, requests finish in the order they came, and the slow ones are not stretched
by everything that arrives while they run: the tail stays FIFO's, the smallest a closed loop can
have (docs/SCHEDULING.md#time-slices).

The decisions are `should_yield` and `next_streak`, pure functions; `TimeSlicer` wires them to the
timer.
"""
from __future__ import annotations

import atexit
import signal
import time
from collections import deque
from typing import Any

import gevent
from greenlet import getcurrent

YIELD_FOR = 1e-6  # sleep(0) would only run callbacks; any timer makes the loop poll for I/O first
# Modules whose frames are never interrupted: the engines, the worker's own plumbing, gevent.
NOT_HERE = ("master.", "gevent", "greenlet")


STREAK = 3  # requests in a row, each of COMPUTED rings or more, that make a connection a computing one
COMPUTED = 2  # rings in one request that say it computed (one alone may land in a 0.1 ms request by chance)
LONG = 5  # slices one request may use before it yields, whatever its connection did before
COMPUTING_SEEN = 4  # requests seen computing within a while that make the worker's load a computing one


class Turn:
    """One connection's use of the CPU, as the timer saw it."""

    __slots__ = ("streak", "rings")

    def __init__(self) -> None:
        self.streak = 0  # its last requests in a row that each computed (up to STREAK)
        self.rings = 0  # rings that landed during the request being served now


def should_yield(rings: int, streak: int, module: str) -> bool:
    """Whether a request the timer interrupted should give the CPU away now.

    `rings`: how many rings have landed in this request so far (this one included); `streak`:
    its connection's, before this request; `module`: where the ring landed. Never in code that
    is ours or gevent's (not reentrant). The request of a connection that is not a computing one
    runs on, unless it computes LONG slices by itself.
    """
    if module.startswith(NOT_HERE):
        return False
    return streak >= STREAK or rings >= LONG


def computing_client(turn: Turn) -> bool:
    """Whether a connection's last requests all computed: its requests yield at every ring."""
    return turn.streak >= STREAK


def next_streak(streak: int, rings: int) -> int:
    """A connection's streak once a request the timer rang `rings` times in has finished."""
    return min(streak + 1, STREAK) if rings >= COMPUTED else 0


class TimeSlicer:
    """The worker's slicing timer; engines mark the greenlets that are running app code."""

    def __init__(self, slice_s: float) -> None:
        self.slice_s = slice_s
        self.in_app: dict = {}  # greenlet inside the app for a request now -> its connection's Turn
        self.yields = 0  # how many times a request gave the CPU away (for tests and logs)
        # When requests were last seen computing (COMPUTED rings in one), the latest COMPUTING_SEEN.
        self.computed: deque[float] = deque(maxlen=COMPUTING_SEEN)
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

    def computing_lately(self, within: float, now: float) -> bool:
        """Whether COMPUTING_SEEN requests computed within the last `within` seconds. Not one: a
        single fast request can ring twice now and then (a garbage collection, a first request)."""
        computed = self.computed
        return len(computed) == COMPUTING_SEEN and now - computed[0] < within

    def enter(self, turn: Turn) -> Any:
        """The calling greenlet starts app code for a request on the connection `turn` belongs to;
        pass the result to leave()."""
        current = getcurrent()
        self.in_app[current] = turn
        return current

    def leave(self, current: Any) -> None:
        """That greenlet is done with the app for this request: its connection's streak is updated."""
        turn = self.in_app.pop(current, None)
        if turn is not None:
            turn.streak = next_streak(turn.streak, turn.rings)
            turn.rings = 0

    def _ring(self, _signum: int, frame: Any) -> None:
        turn = self.in_app.get(getcurrent())
        if turn is None:
            return
        turn.rings += 1
        if turn.rings == COMPUTED:
            self.computed.append(time.monotonic())
        module = frame.f_globals.get("__name__", "") if frame is not None else "master."
        if not should_yield(turn.rings, turn.streak, module):
            return
        self.yields += 1
        gevent.sleep(YIELD_FOR)  # a timer, so the loop polls: what is ready runs, then this request
