"""`shared` (Node's SCHED_NONE): every worker accepts on the one socket the primary opened."""
from __future__ import annotations

from typing import Any

from .base import Handle, Reply


class SharedHandle(Handle):
    """Hands the listening socket itself to each worker; the kernel picks who accepts."""

    policy = "shared"

    def add(self, worker: Any, reply: Reply) -> None:
        """Send the worker a duplicate of the listening socket (at start-up, to all of them together)."""
        self.workers[worker.id] = worker
        self.admit_together(lambda: self.sock.fileno() >= 0 and reply(fds=[self.sock.fileno()], ok=True,
                                                                       policy=self.policy, port=self.port))
