"""`rr` (Node's RoundRobinHandle): the primary accepts and hands each connection to a free worker.

A worker is *free* when it has acknowledged every connection handed to it. The primary
keeps its own copy of a connection until the worker's acknowledgement says "accepted", so
a worker that is draining (it refuses) or that dies before answering never loses the
connection: it goes to the next free worker instead.
"""
from __future__ import annotations

import socket
from collections import OrderedDict, deque
from typing import Any

from .. import ipc
from .base import Handle, Reply

MAX_QUEUED = 128  # connections accepted but not yet handed over; past this the kernel backlog holds them


class RoundRobinHandle(Handle):
    """Accepts in the primary, distributes to workers in turn, re-routes refusals."""

    policy = "rr"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sock.setblocking(False)
        self.free: OrderedDict[int, Any] = OrderedDict()
        self.pending: deque[socket.socket] = deque()
        self.handed = 0
        self.refused = 0
        self._accepting = False
        self._closed = False

    def add(self, worker: Any, reply: Reply) -> None:
        """Admit a worker: it is free at once."""
        self.workers[worker.id] = worker
        self.free[worker.id] = worker
        reply(ok=True, policy=self.policy, port=self.port)
        self._set_accepting(True)
        self.distribute()

    def remove(self, worker: Any) -> bool:
        """Stop handing connections to `worker` (its unanswered handoffs are re-routed)."""
        self.workers.pop(worker.id, None)
        self.free.pop(worker.id, None)
        if not self.workers:
            self._set_accepting(self.persistent and not self._closed and len(self.pending) < MAX_QUEUED)
        return not self.workers

    def close(self) -> None:
        """Stop accepting and close the queued connections and the listener."""
        self._closed = True
        self._set_accepting(False)
        while self.pending:
            self.pending.popleft().close()
        super().close()

    def _set_accepting(self, wanted: bool) -> None:
        if wanted == self._accepting or (wanted and self._closed):
            return
        self._accepting = wanted
        if wanted:
            self.loop.add_reader(self.sock.fileno(), self._on_acceptable)
        else:
            self.loop.remove_reader(self.sock.fileno())

    def _on_acceptable(self) -> None:
        for _ in range(64):
            if len(self.pending) >= MAX_QUEUED:
                self._set_accepting(False)  # backpressure: let the kernel queue the rest
                break
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. EMFILE or ECONNABORTED: try again on the next readiness
            self.pending.append(conn)
        self.distribute()

    def distribute(self) -> None:
        """Hand queued connections to free workers, oldest connection first."""
        while self.pending and self.free:
            _, worker = self.free.popitem(last=False)
            self._handoff(worker, self.pending.popleft())
        if not self._closed and len(self.pending) < MAX_QUEUED and (self.workers or self.persistent):
            self._set_accepting(True)

    def _handoff(self, worker: Any, conn: socket.socket) -> None:
        def on_reply(reply: dict[str, Any] | None) -> None:
            if reply is not None and reply.get("accepted"):
                self.handed += 1
                conn.close()  # the worker holds its own copy now
                if worker.id in self.workers:
                    self.free[worker.id] = worker
            else:
                # Refused (draining) or the worker is gone: this connection goes to another.
                self.refused += 1
                self.pending.appendleft(conn)
            self.distribute()

        worker.request(ipc.internal("newconn"), [conn.fileno()], on_reply)
