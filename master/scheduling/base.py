"""What every scheduling policy shares: one small interface over a listening socket."""
from __future__ import annotations

import socket
from typing import Any, Callable

from ..core.net import bind_socket

Reply = Callable[..., None]  # reply(fds=None, **fields) answers the worker's queryServer


class Handle:
    """One listening address under one policy (Node's SharedHandle/RoundRobinHandle).

    `add(worker, reply)` admits a worker that asked to listen; `remove(worker)` takes it
    out (True when no worker is left); `close()` releases the socket. A persistent handle
    (opened by the arbiter before forking) stays open when its last worker leaves, so
    clients queue in the backlog instead of being refused while workers restart.
    """

    policy = "base"

    def __init__(self, host: str, port: int, loop: Any, *, backlog: int = 2048, persistent: bool = False) -> None:
        self.host = host
        self.loop = loop
        self.backlog = backlog
        self.persistent = persistent
        self.workers: dict[int, Any] = {}
        self.sock = self.open(host, port)
        self.port = self.sock.getsockname()[1]

    def open(self, host: str, port: int) -> socket.socket:
        """Create this policy's socket."""
        return bind_socket(host, port, backlog=self.backlog)

    def expect(self, workers: int) -> None:
        """At start-up, `workers` are about to join (rr waits for them; the others cannot hold connections)."""

    def add(self, worker: Any, reply: Reply) -> None:
        """Admit `worker`; answer its queryServer through `reply`."""
        self.workers[worker.id] = worker
        reply(ok=True, policy=self.policy, port=self.port)

    def remove(self, worker: Any) -> bool:
        """Take `worker` out; True when the handle has no worker left."""
        self.workers.pop(worker.id, None)
        return not self.workers

    def close(self) -> None:
        """Release the listening socket."""
        if self.sock.fileno() >= 0:
            self.sock.close()

    def fileno(self) -> int:
        """The listening socket's descriptor."""
        return self.sock.fileno()
