"""The load board: one small shared-memory record per worker, so the primary sees load as it happens.

Heartbeats come once a second; placing a connection or a request by load needs the figures of
this very moment. Each worker gets a memfd at fork, maps it, and keeps its counters there with
plain stores (tens of nanoseconds); the primary maps the same page and reads them. Every field
has exactly one writer, so no lock is needed: the worker writes its own figures, the primary
writes only SHED_ASKED and TAKES_BACK. A reader may see a figure a moment old, never a torn one
(aligned 8-byte stores).
"""
from __future__ import annotations

import mmap
import os
import time

# Field indexes (int64 each). Written by the worker unless noted.
CONNECTIONS = 0  # connections open in the worker (idle keep-alive ones included)
IN_FLIGHT = 1  # requests being served now
WAITING = 2  # connections with a request received and not yet being served (engines that know)
PROGRESS = 3  # bumped whenever the worker's loop gets something done: a stalled worker stops it
SHED_ASKED = 4  # written by the primary: how many connections it has asked this worker to give up, ever
SHED_DONE = 5  # how many the worker has given up (handed back or closed at a request boundary), ever
BUSY_SINCE_NS = 6  # monotonic ns since which the worker has had a request in flight; 0 when idle
SERVED = 7  # requests served, ever
HEARTBEATS = 8  # bumped by the heartbeat greenlet, which runs only while the worker's loop turns
FULL = 9  # 1 while the worker is at its connection cap and takes nothing new (not stalled: full)
KEPT = 10  # open connections kept alive after a response: the clients that stay (what rebalancing spreads)
# Written by the primary (rr): 1 while its listener stays open, so it takes this worker's idle
# keep-alive connections back even while the worker drains (a rolling restart, a scale-down) and
# gives them to the others; 0 once the listener closes (a shutdown), when draining closes them.
TAKES_BACK = 11
FIELDS = 16  # room to grow without changing the page
SIZE = FIELDS * 8
ENV = "PYCLUSTER_BOARD_FD"


class Board:
    """One worker's record, mapped from a memfd (int64 cells; the keep-alive pool's table is one too)."""

    __slots__ = ("fd", "_map", "cells", "closed")

    def __init__(self, fd: int, size: int = SIZE) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, size)
        self.cells = memoryview(self._map).cast("q")
        self.closed = False

    @staticmethod
    def new_memfd(size: int = SIZE, name: str = "pycluster-board") -> int:
        """A zeroed memfd of `size` bytes, to map on both sides."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return fd

    @classmethod
    def create(cls) -> "Board":
        """A new zeroed record (the primary makes one per worker and passes its fd down)."""
        return cls(cls.new_memfd())

    def __getitem__(self, field: int) -> int:
        return self.cells[field]

    def __setitem__(self, field: int, value: int) -> None:
        self.cells[field] = value

    def bump(self, field: int, by: int = 1) -> None:
        """Add to a field this side writes."""
        self.cells[field] += by

    def close(self) -> None:
        """Unmap and close the descriptor."""
        if self.closed:
            return
        self.closed = True
        self.cells.release()
        self._map.close()
        try:
            os.close(self.fd)
        except OSError:
            pass


def now_ns() -> int:
    """The clock BUSY_SINCE_NS is in (the same in every process on this machine)."""
    return time.monotonic_ns()
