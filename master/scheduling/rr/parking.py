"""Idle keep-alive connections the primary holds between two requests (given back by workers).

A worker gives up an idle keep-alive connection when the rebalancer asks it to, or when the
connection has sat idle for a while (master/worker/balance.py). The primary then watches it in
its own loop, and the moment the client's next request arrives, hands it to whichever worker is
least busy right then (placement.place_request): load is balanced request by request, not just
connection by connection. Nothing is read here: the request stays whole in the kernel's queue
for the worker. A parked connection idle past the keep-alive timeout is closed, as a worker
would, and at most MAX_PARKED are held (past that they are placed at once).
"""
from __future__ import annotations

import os
import socket
from typing import Any, Callable

from ...core.lane import Conn

MAX_PARKED = 4096


class Parking:
    """Parked connections, watched by the loop; `on_request(conn, giver)` when one has something to read."""

    def __init__(self, loop: Any, on_request: Callable[[Conn, Any], None], keepalive_timeout: float = 5.0) -> None:
        self.loop = loop
        self.on_request = on_request
        self.keepalive_timeout = keepalive_timeout
        self.parked: dict[int, tuple[Conn, float, Any]] = {}  # fd -> (connection, when parked, who gave it up)

    def __len__(self) -> int:
        return len(self.parked)

    def park(self, conn: Conn, giver: Any = None) -> bool:
        """Watch `conn`, given up by worker `giver`, until its next request; False when full (the
        caller places it at once)."""
        if len(self.parked) >= MAX_PARKED:
            return False
        fd = conn[0]
        self.parked[fd] = (conn, self.loop.clock(), giver)
        self.loop.add_reader(fd, lambda: self._readable(fd))
        return True

    def _readable(self, fd: int) -> None:
        conn, _since, giver = self.parked.pop(fd)
        self.loop.remove_reader(fd)
        if _closed_by_client(fd):
            os.close(fd)
            return
        self.on_request(conn, giver)

    def expire(self) -> int:
        """Close what has been idle longer than the keep-alive timeout; how many were closed."""
        if not self.keepalive_timeout:
            return 0
        deadline = self.loop.clock() - self.keepalive_timeout
        stale = [fd for fd, (_conn, since, _giver) in self.parked.items() if since <= deadline]
        for fd in stale:
            del self.parked[fd]
            self.loop.remove_reader(fd)
            os.close(fd)  # nothing was read from it and nothing is owed: a plain close is a FIN
        return len(stale)

    def close(self) -> list[Conn]:
        """Stop watching; the connections still parked, for the caller to place or close."""
        conns = [conn for conn, _since, _giver in self.parked.values()]
        for fd in self.parked:
            self.loop.remove_reader(fd)
        self.parked.clear()
        return conns


def _closed_by_client(fd: int) -> bool:
    """Readable with nothing to read: the client closed its end (or the connection broke)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fd)  # the family does not matter here
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.detach()
