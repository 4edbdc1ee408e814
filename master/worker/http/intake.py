"""Where the engine's connections come from, paused while the worker is at its connection cap.

- ListenerIntake: our own listener (shared, reuseport). At the cap it stops accepting, so
  new connections wait in the kernel's queue (under shared, another worker takes them).
- LaneIntake: the primary's handoff lane (rr), read by LaneReader. At the cap it stops
  reading the lane, so the connections the primary sends pile up there, and past its
  in-flight cap the primary gives them to other workers.

Nothing is ever accepted and then dropped for want of room.
"""
from __future__ import annotations

import _socket
import errno
import sys
import time
from typing import Any, Callable

import gevent
import gevent.event

from ..lane_reader import LaneReader

PRESSURE_BACKOFF = 0.1  # seconds without accepting after EMFILE/ENFILE
PRESSURE_LOG_EVERY = 10.0  # seconds between two descriptor-pressure log lines
_PRESSURE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Room:
    """Whether the worker may take another connection (a cap of 0 means no cap)."""

    def __init__(self, cap: int, count: Callable[[], int]) -> None:
        self.cap = cap
        self.count = count
        self.event = gevent.event.Event()
        self.event.set()

    def full(self) -> bool:
        """At the cap now (and remembered, so the next closed connection reopens the intake)."""
        if self.cap and self.count() >= self.cap:
            self.event.clear()
            return True
        return False

    def freed(self) -> None:
        """A connection ended: reopen the intake if it was paused and there is room again."""
        if not self.event.is_set() and self.count() < self.cap:
            self.event.set()

    def wait(self) -> None:
        """Block until there is room."""
        self.event.wait()


class ListenerIntake:
    """Accepts on our own listener."""

    def __init__(self, listener: Any, take: Callable[[int, Any], None], room: Room, max_accept: int,
                 worker_id: Any) -> None:
        self.sock = _socket.socket(fileno=listener.detach())  # raw: no wrapper per accept
        self.sock.setblocking(False)
        self.take, self.room, self.max_accept, self.worker_id = take, room, max_accept, worker_id
        self.accepting = True
        self._logged = 0.0
        self._greenlet: Any = None

    def start(self) -> None:
        """Accept from now on."""
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        hub = gevent.get_hub()
        watcher = hub.loop.io(self.sock.fileno(), 1)
        try:
            while self.accepting:
                if self.room.full():
                    self.room.wait()
                    continue
                hub.wait(watcher)
                self._accept(self.max_accept)
        finally:
            watcher.close()

    def _accept(self, limit: int, capped: bool = True) -> int:
        taken = 0
        while taken < limit and not (capped and self.room.full()):
            try:
                fd, address = self.sock._accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _PRESSURE:
                    self._pressure(exc)
                break
            self.take(fd, address)
            taken += 1
        return taken

    def _pressure(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._logged >= PRESSURE_LOG_EVERY:
            self._logged = now
            print(f"[worker {self.worker_id}] descriptor pressure: accept failed ({exc.strerror}) with "
                  f"{self.room.count()} connections open; new connections wait in the kernel's queue",
                  file=sys.stderr, flush=True)
        gevent.sleep(PRESSURE_BACKOFF)

    def stop(self) -> None:
        """Accept what the kernel has queued (cap or not), then close the listener.

        Closing the last descriptor of a listening socket resets whatever is still in its queue.
        """
        self.accepting = False
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        self._accept(1024, capped=False)
        self.sock.close()


class LaneIntake:
    """Reads the rr handoff lane (master/worker/lane_reader.py) while the worker has room."""

    def __init__(self, fd: int, take: Callable[[int, Any], None], draining: Callable[[], bool], room: Room) -> None:
        self.reader = LaneReader(fd, take, draining)
        self.room = room

    def start(self) -> None:
        """Serve what arrives from now on."""
        gevent.spawn(self._run)

    def _run(self) -> None:
        hub = gevent.get_hub()
        watcher = hub.loop.io(self.reader.sock.fileno(), 1)
        try:
            while True:
                if self.room.full():
                    self.room.wait()
                    continue
                hub.wait(watcher)
                if not self.reader.read_now():
                    return
        finally:
            watcher.close()

    def read_now(self) -> None:
        """Serve every connection queued in the lane now (the runtime calls this before draining)."""
        self.reader.read_now()
