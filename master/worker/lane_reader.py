"""The worker's end of its handoff lane (rr): read the connections the primary hands over.

Wire format: master/core/lane.py. Each connection read is given to `serve(fd, peer)`;
while the worker drains, connections are written back up the lane instead, and the
primary gives them to another worker.
"""
from __future__ import annotations

import _socket
import socket
from typing import Any, Callable

import gevent

from ..core import lane
from ..core.net import close_fd


class LaneReader:
    """Reads one lane in its own greenlet; `read_now()` reads it dry from any greenlet."""

    def __init__(self, fd: int, serve: Callable[[int, Any], None], draining: Callable[[], bool],
                 on_read: Callable[[], None] = lambda: None) -> None:
        # The C-level socket class: a non-blocking read that never parks a greenlet, so a
        # drain can read the lane dry from another greenlet without contention.
        self.sock: Any = _socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fd)
        self.sock.setblocking(False)
        self.serve = serve
        self.draining = draining
        self.on_read = on_read  # each read is progress the primary can see (a stalled worker reads nothing)

    def start(self) -> None:
        """Serve what arrives from now on."""
        gevent.spawn(self._run)

    def _run(self) -> None:
        hub = gevent.get_hub()
        watcher = hub.loop.io(self.sock.fileno(), 1)  # one watcher for the lane's life, not one per wait
        try:
            while self.sock is not None:
                hub.wait(watcher)
                if not self.read_now():
                    return
        finally:
            watcher.close()

    def read_now(self) -> bool:
        """Serve every connection queued in the lane now; draining, send them back instead.

        The runtime calls this just before it starts draining, so whatever the primary
        handed over before telling us to disconnect is served here. False at end of file.
        """
        while self.sock is not None:
            try:
                conns = lane.receive(self.sock)
            except (BlockingIOError, InterruptedError):
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
