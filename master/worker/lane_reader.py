"""The worker's end of its handoff lane (rr): read the connections the primary hands over.

Wire format: master/core/lane.py. Each connection read is given to `serve(fd, peer)`;
while the worker drains, connections are written back up the lane instead, and the
primary gives them to another worker.

At its connection cap (conn_cap.py) the worker stops reading the lane: what the primary
sends piles up unread there, its unread count for this worker climbs past its in-flight
cap, and it hands new connections to other workers (or holds them in its own queue and
the kernel's) until this worker has room again. A record whose descriptors the kernel
could not install is never read half (that would lose connections for good: MSG_CTRUNC):
it waits in the lane until descriptors are free, and the worker says so in its log.
"""
from __future__ import annotations

import _socket
import socket
from typing import Any, Callable

import gevent

from ..core import lane
from ..core.net import close_fd
from .conn_cap import ConnectionCap
from .pressure import PressureLog, shared

ROOM_RECHECK = 0.25  # seconds between checks of `draining` while waiting for room under the cap
STARVED_RETRY = 0.1  # seconds between tries while the worker has no descriptors for the next record


class LaneReader:
    """Reads one lane in its own greenlet; `read_now()` reads it dry from any greenlet."""

    def __init__(self, fd: int, serve: Callable[[int, Any], None], draining: Callable[[], bool],
                 on_read: Callable[[], None] = lambda: None, cap: ConnectionCap | None = None,
                 log: PressureLog | None = None) -> None:
        # The C-level socket class: a non-blocking read that never parks a greenlet, so a
        # drain can read the lane dry from another greenlet without contention.
        self.sock: Any = _socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fd)
        self.sock.setblocking(False)
        self.serve = serve
        self.draining = draining
        self.on_read = on_read  # each read is progress the primary can see (a stalled worker reads nothing)
        self.cap = cap
        self.log = log or shared()
        self.starved = False  # the last read stopped: no descriptors free for the next record

    def start(self) -> None:
        """Serve what arrives from now on."""
        gevent.spawn(self._run)

    def _run(self) -> None:
        hub = gevent.get_hub()
        watcher = hub.loop.io(self.sock.fileno(), 1)  # one watcher for the lane's life, not one per wait
        try:
            while self.sock is not None:
                self._wait_for_room()
                hub.wait(watcher)
                if not self.read_now(within_cap=True):
                    return
                if self.starved:
                    gevent.sleep(STARVED_RETRY)  # the lane stays readable: never spin on it
        finally:
            watcher.close()

    def _wait_for_room(self) -> None:
        # A drain must not wait here: it sends the lane's connections back (read_now).
        while self.cap is not None and self.cap.full() and not self.draining():
            self.cap.wait_for_room(ROOM_RECHECK)

    def read_now(self, within_cap: bool = False) -> bool:
        """Serve the connections queued in the lane now; draining, send them back instead.

        The runtime calls this just before it starts draining, so whatever the primary
        handed over before telling us to disconnect is served here, even past the cap
        (the cap's descriptor reserve holds a record). With `within_cap`, it stops reading
        at the cap and leaves the rest queued. False at end of file.
        """
        while self.sock is not None:
            if within_cap and self.cap is not None and self.cap.full() and not self.draining():
                return True
            self.starved = False
            try:
                conns = lane.receive_whole(self.sock)
            except (BlockingIOError, InterruptedError):
                return True
            except lane.OutOfDescriptors as exc:
                self._starved(exc)
                return True
            except OSError:
                return False
            if conns is None:
                return False
            self.on_read()
            if not isinstance(conns, list):
                if conns == lane.PING:  # the primary waits to hear that we caught up
                    self._answer_ping()
                continue
            if self.draining():
                self._send_back(conns)
            else:
                for fd, peer in conns:
                    self.serve(fd, peer)
        return False

    def _starved(self, exc: OSError) -> None:
        self.starved = True
        self.log.warn("starved", f"out of descriptors ({exc.strerror}) with {self.cap.open if self.cap else '?'} "
                                 "connections open: handed-over connections wait in the lane until some are free")

    def give_back(self, fd: int, peer: Any) -> bool:
        """Write an idle keep-alive connection back up the lane, for the primary to place (balance.py)."""
        if self.sock is None:
            return False
        try:
            lane.send(self.sock, [(fd, peer)], idle=True)
        except OSError:  # the primary is not reading (full) or gone: keep serving it ourselves
            return False
        return True

    def _answer_ping(self) -> None:
        try:
            self.sock.send(lane.PONG)
        except OSError:
            pass

    def _send_back(self, conns: list[lane.Conn]) -> None:
        # The primary gives them to another worker (it counts them as refused).
        try:
            lane.send(self.sock, conns)
        except OSError:
            pass  # the primary is gone: nobody is left to serve them
        for fd, _ in conns:
            close_fd(fd)
