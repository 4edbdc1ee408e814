"""Where the engine's own connections come from: its listener (shared, reuseport), paused at the cap.

At the cap (master/worker/conn_cap.py, shared by every engine) it stops accepting, so new
connections wait in the kernel's queue (under shared, another worker takes them); nothing is
ever accepted and then dropped. Under rr the lane is read by LaneReader, which the same cap
pauses (master/worker/lane_reader.py).
"""
from __future__ import annotations

import _socket
import errno
from typing import Any, Callable

import gevent

from ..conn_cap import ConnectionCap
from ..pressure import PressureLog

PRESSURE_BACKOFF = 0.1  # seconds without accepting after EMFILE/ENFILE
_PRESSURE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ListenerIntake:
    """Accepts on our own listener."""

    def __init__(self, listener: Any, take: Callable[[int, Any], None], cap: ConnectionCap, max_accept: int,
                 log: PressureLog) -> None:
        self.sock = _socket.socket(fileno=listener.detach())  # raw: no wrapper per accept
        self.sock.setblocking(False)
        self.take, self.cap, self.max_accept, self.log = take, cap, max_accept, log
        self.accepting = True
        self._greenlet: Any = None

    def start(self) -> None:
        """Accept from now on."""
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        hub = gevent.get_hub()
        watcher = hub.loop.io(self.sock.fileno(), 1)
        try:
            while self.accepting:
                if self.cap.full():
                    self.cap.wait_for_room()
                    continue
                hub.wait(watcher)
                self._accept(self.max_accept)
        finally:
            watcher.close()

    def _accept(self, limit: int, capped: bool = True) -> int:
        taken = 0
        while taken < limit and not (capped and self.cap.full()):
            try:
                fd, address = self.sock._accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _PRESSURE:
                    self.log.warn("accept", f"cannot accept ({exc.strerror}) with {self.cap.open} connections "
                                            "open: new connections wait in the kernel's queue")
                    gevent.sleep(PRESSURE_BACKOFF)
                break
            self.take(fd, address)
            taken += 1
        return taken

    def stop(self) -> None:
        """Accept what the kernel has queued (cap or not), then close the listener.

        Closing the last descriptor of a listening socket resets whatever is still in its queue.
        """
        self.accepting = False
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        self._accept(1024, capped=False)
        self.sock.close()
