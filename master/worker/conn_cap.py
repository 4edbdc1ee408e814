"""The cap on connections one worker serves at once (worker_connections), for every engine.

Past the cap a worker takes nothing new: a listener stops accepting (connections wait in
the kernel's queue, or another worker's accept takes them), and under rr the worker stops
reading its handoff lane, so the primary's unread count for it climbs and it routes
elsewhere. Nothing is ever accepted and dropped.

The cap is also held under the descriptor limit: each connection costs a descriptor, and a
worker out of descriptors fails in ways a client cannot tell from a crash (EMFILE on
accept; a handoff record whose descriptors the kernel could not install, MSG_CTRUNC). So
the effective cap leaves RESERVE descriptors free: room for one whole handoff record, the
app's own files and sockets, and the worker's plumbing.
"""
from __future__ import annotations

import os
import resource
from typing import Any, Callable

import gevent.event

from ..core.board import FULL
from ..core.lane import MAX_PER_RECORD
from .pressure import PressureLog, shared

RESERVE = MAX_PER_RECORD + 64


def open_descriptors() -> int:
    """Descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself opened
    except OSError:
        return 16


def descriptor_bound(reserve: int = RESERVE) -> int:
    """How many more connections the descriptor limit allows, keeping `reserve` free."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(1, soft - open_descriptors() - reserve)


class ConnectionCap:
    """Counts this worker's open connections against its cap; tells waiters when room comes back."""

    def __init__(self, configured: int, bound: int | None = None, log: PressureLog | None = None,
                 board: Any = None) -> None:
        bound = descriptor_bound() if bound is None else bound
        self.board = board  # the primary reads FULL there: a full worker is not a stalled one
        self.configured = configured
        self.limit = min(configured, bound) if configured else bound  # 0: only the descriptor limit caps it
        self.open = 0
        self.log = log or shared()
        self._room = gevent.event.Event()
        self._room.set()
        self._on_room: list[Callable[[], None]] = []
        if configured and bound < configured:
            self.log.warn("cap", f"worker_connections {configured} is more than the descriptor limit "
                                 f"(RLIMIT_NOFILE) leaves room for: capping at {self.limit} connections")

    def full(self) -> bool:
        """Whether the worker is at its cap."""
        return self.open >= self.limit

    def opened(self) -> None:
        """One more connection is being served."""
        self.open += 1
        if self.open >= self.limit:
            self._room.clear()
            if self.board is not None:
                self.board[FULL] = 1
            self.log.warn("full", f"at its cap of {self.limit} connections: new ones wait "
                                  "(in the kernel's queue, or the primary gives them to another worker)")

    def closed(self) -> None:
        """A connection ended; wake whoever waits for room."""
        self.open -= 1
        if self.open < self.limit and not self._room.is_set():
            self._room.set()
            if self.board is not None:
                self.board[FULL] = 0
            for callback in list(self._on_room):
                callback()

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call `callback()` each time the worker drops back under its cap."""
        self._on_room.append(callback)

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block this greenlet until under the cap (or `timeout`); whether there is room."""
        return self._room.wait(timeout)
