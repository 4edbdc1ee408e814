"""The primary's event loop: one thread, a selector, timers and a signal queue.

Signal handlers only record the signal; the C-level wake-up fd makes the selector return,
and the loop then runs the registered handler like any other callback (gunicorn's
arbiter and Circus work this way). Nothing ever runs re-entrantly inside a handler.
"""
from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import time
from collections import deque
from typing import Any, Callable


class Timer:
    """A scheduled call; `cancel()` it, or `unref()` it so it does not keep run() alive."""

    __slots__ = ("when", "fn", "args", "cancelled", "ref")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple, ref: bool) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.ref = ref

    def cancel(self) -> None:
        """Do not run this call."""
        self.cancelled = True

    def unref(self) -> "Timer":
        """Let the loop finish even though this timer is pending."""
        self.ref = False
        return self


class EventLoop:
    """Selector + timers + signals, for the primary process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._ready: deque[tuple[Callable[..., Any], tuple]] = deque()
        self._signals: deque[int] = deque()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, (self._drain_wakeups, None))
        self._stopped = False

    # -- callbacks and timers -------------------------------------------------------
    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the next turn of the loop."""
        self._ready.append((fn, args))

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any, ref: bool = True) -> Timer:
        """Run `fn(*args)` after `delay` seconds."""
        timer = Timer(self.clock() + max(0.0, delay), fn, args, ref)
        heapq.heappush(self._timers, (timer.when, next(self._counter), timer))
        return timer

    def has_pending(self) -> bool:
        """Whether a callback or a referenced timer is still waiting to run."""
        return bool(self._ready) or any(t.ref and not t.cancelled for _, _, t in self._timers)

    # -- file descriptors -----------------------------------------------------------
    def _update(self, fd: int, reader: Any, writer: Any) -> None:
        mask = (selectors.EVENT_READ if reader else 0) | (selectors.EVENT_WRITE if writer else 0)
        try:
            self.selector.get_key(fd)
            registered = True
        except KeyError:
            registered = False
        if not mask:
            if registered:
                self.selector.unregister(fd)
        elif registered:
            self.selector.modify(fd, mask, (reader, writer))
        else:
            self.selector.register(fd, mask, (reader, writer))

    def _callbacks(self, fd: int) -> tuple[Any, Any]:
        try:
            return self.selector.get_key(fd).data
        except KeyError:
            return None, None

    def add_reader(self, fd: int, fn: Callable[[], None]) -> None:
        """Call `fn()` whenever `fd` is readable."""
        self._update(fd, fn, self._callbacks(fd)[1])

    def remove_reader(self, fd: int) -> None:
        """Stop watching `fd` for reading."""
        self._update(fd, None, self._callbacks(fd)[1])

    def add_writer(self, fd: int, fn: Callable[[], None]) -> None:
        """Call `fn()` whenever `fd` is writable."""
        self._update(fd, self._callbacks(fd)[0], fn)

    def remove_writer(self, fd: int) -> None:
        """Stop watching `fd` for writing."""
        self._update(fd, self._callbacks(fd)[0], None)

    # -- signals --------------------------------------------------------------------
    def add_signal_handler(self, signum: int, fn: Callable[[int], None]) -> None:
        """Run `fn(signum)` in the loop whenever `signum` arrives."""
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._signal_handlers[signum] = fn
        signal.signal(signum, self._record_signal)

    def remove_signal_handler(self, signum: int) -> None:
        """Restore the default action of `signum`."""
        if self._signal_handlers.pop(signum, None) is not None:
            signal.signal(signum, signal.SIG_DFL)

    def _record_signal(self, signum: int, _frame: Any) -> None:
        # Only record: the loop does the work (DESIGN.md, style 3).
        self._signals.append(signum)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def wake(self) -> None:
        """Make a blocked select() return (safe from a signal handler or another thread)."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, InterruptedError):
            pass

    # -- running --------------------------------------------------------------------
    def stop(self) -> None:
        """Make run() return after the current turn."""
        self._stopped = True
        self.wake()

    def run_once(self, max_wait: float | None = None) -> None:
        """One turn: wait for I/O or the next timer, then run what is due."""
        timeout = max_wait
        if self._ready or self._signals:
            timeout = 0
        elif self._timers:
            due = max(0.0, self._timers[0][0] - self.clock())
            timeout = due if timeout is None else min(timeout, due)
        for key, mask in self.selector.select(timeout):
            reader, writer = key.data
            if key.fd == self._wake_r:
                reader()
                continue
            if mask & selectors.EVENT_READ and reader:
                reader()
            if mask & selectors.EVENT_WRITE and writer and self._callbacks(key.fd)[1] is writer:
                writer()
        while self._signals:
            signum = self._signals.popleft()
            handler = self._signal_handlers.get(signum)
            if handler:
                handler(signum)
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._ready.append((timer.fn, timer.args))
        for _ in range(len(self._ready)):
            fn, args = self._ready.popleft()
            fn(*args)

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Turn the loop until stop() or until `until()` is true."""
        self._stopped = False
        while not self._stopped and not (until and until()):
            self.run_once()

    def close(self) -> None:
        """Release the selector and the wake-up pipe."""
        for signum in list(self._signal_handlers):
            self.remove_signal_handler(signum)
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
