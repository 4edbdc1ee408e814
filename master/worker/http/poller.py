"""Readiness for every connection of a worker: one edge-triggered epoll set, served FIFO.

Why not a gevent watcher per connection: libev invokes the watchers of one poll LIFO, and
never removes a descriptor from its epoll set when a watcher stops. Under rr the primary
keeps copies of recent connections, so a connection we closed can still report events for
a descriptor number we may have reused, and libev answers that by rebuilding its whole
epoll set. Here a connection is added once, removed before its descriptor is closed, and the
events of one poll are handed out in the order the kernel queued them: the connection that
became ready first is served first, whatever came after it.

Edge-triggered, so nothing changes per request: an event that arrives while its connection
is busy (the app runs, or it waits to write) is remembered in `conn.ready_bits`, and the
connection reads at once when it next wants bytes.

The sweep, a timer in the hub, expires connections that wait on a client past their
deadline (head, body, idle keep-alive, a stalled write) and, while the worker drains,
expires keep-alive connections that have been idle for IDLE_CLOSE_AFTER (given back to the master
under rr while it takes them, closed otherwise). A connection in the middle of a request (its head
or body) is an open exchange: a drain waits for it, up to its timeout.
"""
from __future__ import annotations

import select
import sys
import time
from typing import Any

from gevent.monkey import get_original

_epoll = get_original("select", "epoll")  # gevent's monkey patching hides it: it is ours alone here

IN, OUT, ET, RDHUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLET, select.EPOLLRDHUP
HUP_ERR = select.EPOLLHUP | select.EPOLLERR
READ_WAIT = IN | RDHUP | HUP_ERR  # what wakes a connection waiting for bytes
WRITE_WAIT = OUT | HUP_ERR  # ... waiting for room to write
EXPIRED = object()  # switched into a waiting connection whose deadline passed (instead of an event mask)
IDLE_CLOSE_AFTER = 0.5  # seconds a keep-alive connection may sit idle during a drain
MAX_EVENTS = 1024


class Poller:
    """One epoll set, dispatched from the hub; a connection is woken by switching into its greenlet."""

    def __init__(self, loop: Any, sweep_every: float) -> None:
        self.epoll = _epoll()
        self._poll = self.epoll.poll
        self.conns: dict[int, Any] = {}  # descriptor -> connection
        self.runners: list[Any] = []  # idle greenlets that serve the next connection (connection.py)
        self.draining = False  # expire keep-alive connections idle for IDLE_CLOSE_AFTER (given back, or closed)
        self.closing = False  # expire every connection that waits on its client (a drain's deadline)
        self._loop = loop
        self._watcher = loop.io(self.epoll.fileno(), 1)
        self._watcher.start(self._dispatch)
        self._timer = loop.timer(sweep_every, sweep_every)
        self._timer.start(self._sweep)

    def set_period(self, seconds: float) -> None:
        """Sweep every `seconds` from now on."""
        self._timer.close()
        self._timer = self._loop.timer(seconds, seconds)
        self._timer.start(self._sweep)

    def add(self, conn: Any) -> None:
        """Watch a connection (it is told about bytes already queued, too)."""
        self.conns[conn.fd] = conn
        self.epoll.register(conn.fd, IN | RDHUP | ET)

    def remove(self, conn: Any) -> None:
        """Stop watching a connection: before its descriptor is closed or passed on."""
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.epoll.unregister(conn.fd)
            except OSError:
                pass  # already closed

    def watch_writes(self, conn: Any) -> None:
        """Also report when a connection can be written to (once it has had to wait for that)."""
        self.epoll.modify(conn.fd, IN | OUT | RDHUP | ET)

    def _dispatch(self) -> None:
        conns = self.conns
        for fd, events in self._poll(0, MAX_EVENTS):
            conn = conns.get(fd)
            if conn is None:
                continue
            if conn.waiting & events:
                try:
                    if conn.greenlet is None:
                        conn.start(events)
                    else:
                        conn.greenlet.switch(events)
                except BaseException:  # noqa: BLE001 - a connection's bug must not stop the others
                    _report()
            else:
                conn.ready_bits |= events

    def _sweep(self) -> None:
        now, closing = time.monotonic(), self.closing
        idle_after = IDLE_CLOSE_AFTER if self.draining else float("inf")
        due = [c for c in self.conns.values()
               if c.waiting and (closing or 0 < c.deadline <= now or (c.idle and now - c.since >= idle_after))]
        for conn in due:
            if conn.waiting and self.conns.get(conn.fd) is conn:
                try:
                    if conn.greenlet is None:
                        conn.start(EXPIRED)
                    else:
                        conn.greenlet.switch(EXPIRED)
                except BaseException:  # noqa: BLE001
                    _report()

    def close(self) -> None:
        """Stop dispatching and release the epoll set."""
        self._watcher.close()
        self._timer.close()
        self.epoll.close()


def _report() -> None:
    import traceback

    traceback.print_exc(file=sys.stderr)
