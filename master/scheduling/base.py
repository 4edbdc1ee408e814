"""What every scheduling policy shares: one small interface over a listening socket."""
from __future__ import annotations

import socket
from typing import Any, Callable

from ..core.net import bind_socket

Reply = Callable[..., None]  # reply(fds=None, **fields) answers the worker's queryServer
STARTUP_WAIT = 1.0  # at start-up, wait this long at most for the first workers to be admitted together


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
        self.expected = 0  # start-up: workers to admit together (expect())
        self.held: list[Callable[[], None]] = []  # their admissions, held until then
        self.sock = self.open(host, port)
        self.port = self.sock.getsockname()[1]

    def open(self, host: str, port: int) -> socket.socket:
        """Create this policy's socket."""
        return bind_socket(host, port, backlog=self.backlog)

    def expect(self, workers: int) -> None:
        """At start-up, `workers` are about to join: admit them together (up to STARTUP_WAIT after the
        first asks), so the first to listen does not take every connection while the others boot.
        Here that holds back the answers that let workers listen; rr holds connections instead."""
        self.expected = workers

    def admit_together(self, admit: Callable[[], None]) -> None:
        """Run `admit()` now, or once the expected workers have all asked (or STARTUP_WAIT passed)."""
        if not self.expected:
            admit()
            return
        if not self.held:
            self.loop.call_later(STARTUP_WAIT, self._admit_held)
        self.held.append(admit)
        if len(self.held) >= self.expected:
            self._admit_held()

    def _admit_held(self) -> None:
        self.expected = 0
        held, self.held = self.held, []
        for admit in held:
            admit()

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
