"""`rr` (Node's RoundRobinHandle): the primary accepts and hands each connection to a worker in turn.

Workers take turns; a worker with MAX_IN_FLIGHT unacknowledged connections sits out until
it acknowledges (Node allows one; a few let a busy primary batch several connections into
one message and one acknowledgement without giving up the turn order). The primary keeps
its own copy of every connection until the worker's acknowledgement says "accepted", so a
worker that is draining (it refuses) or that dies before answering never loses one: it
goes to the next worker instead.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Any

from .. import ipc
from .base import Handle, Reply

MAX_QUEUED = 128  # accepted but not yet handed over; past this the kernel backlog holds them
MAX_IN_FLIGHT = 4  # unacknowledged handoffs per worker


class RoundRobinHandle(Handle):
    """Accepts in the primary, distributes to workers in turn, re-routes refusals."""

    policy = "rr"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sock.setblocking(False)
        self.turns: deque[int] = deque()  # worker ids, next in turn first
        self.in_flight: dict[int, int] = {}
        # (descriptor, peer address): raw, not socket objects, since the primary only passes
        # them on and closes them; the address travels along so workers need no getpeername.
        self.pending: deque[tuple[int, Any]] = deque()
        self.handed = 0
        self.refused = 0
        self._accepting = False
        self._closed = False

    def add(self, worker: Any, reply: Reply) -> None:
        """Admit a worker: it takes its turn at once."""
        self.workers[worker.id] = worker
        self.turns.append(worker.id)
        self.in_flight[worker.id] = 0
        reply(ok=True, policy=self.policy, port=self.port, family=int(self.sock.family))
        self.distribute()

    def remove(self, worker: Any) -> bool:
        """Stop handing connections to `worker` (its unanswered handoffs are re-routed)."""
        self.workers.pop(worker.id, None)
        self.in_flight.pop(worker.id, None)
        if worker.id in self.turns:
            self.turns.remove(worker.id)
        if not self.workers and not self.persistent:
            self._set_accepting(False)
        return not self.workers

    def close(self) -> None:
        """Close the listener without dropping what is queued.

        Connections the kernel already queued are accepted, and every queued connection is
        handed out now, past the in-flight cap: a worker told to disconnect afterwards
        receives them before that message (one ordered channel) and serves them.
        """
        if self._closed:
            return
        self._closed = True
        self._set_accepting(False)
        for _ in range(4096):
            try:
                self.pending.append(self.sock._accept())
            except OSError:  # BlockingIOError: nothing more queued
                break
        super().close()
        batches: dict[int, list[tuple[int, Any]]] = {}
        while self.pending and self.turns:
            worker_id = self.turns[0]
            self.turns.rotate(-1)
            batches.setdefault(worker_id, []).append(self.pending.popleft())
        for worker_id, conns in batches.items():
            self.in_flight[worker_id] += len(conns)
            self._handoff(self.workers[worker_id], conns)
        while self.pending:  # no worker left to take them
            os.close(self.pending.popleft()[0])

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
                break
            try:
                self.pending.append(self.sock._accept())  # raw: no socket object to build and drop
            except OSError:
                break  # EAGAIN: queue empty; EMFILE or ECONNABORTED: try again on the next readiness
        self.distribute()

    def _next_turn(self) -> int | None:
        for _ in range(len(self.turns)):
            worker_id = self.turns[0]
            self.turns.rotate(-1)
            if self.in_flight[worker_id] < MAX_IN_FLIGHT:
                return worker_id
        return None

    def distribute(self) -> None:
        """Hand queued connections out, one per worker per turn, oldest connection first."""
        if self._closed and not self.turns:
            while self.pending:
                os.close(self.pending.popleft()[0])
            return
        batches: dict[int, list[tuple[int, Any]]] = {}
        while self.pending:
            worker_id = self._next_turn()
            if worker_id is None:
                break
            batches.setdefault(worker_id, []).append(self.pending.popleft())
            self.in_flight[worker_id] += 1
        for worker_id, conns in batches.items():
            self._handoff(self.workers[worker_id], conns)
        # Backpressure: accept only while the queue has room.
        self._set_accepting(not self._closed and len(self.pending) < MAX_QUEUED
                            and bool(self.workers or self.persistent))

    def _handoff(self, worker: Any, conns: list[tuple[int, Any]]) -> None:
        def on_reply(reply: dict[str, Any] | None) -> None:
            if worker.id in self.in_flight:
                self.in_flight[worker.id] -= len(conns)
            if reply is not None and reply.get("accepted"):
                self.handed += len(conns)
                for fd, _ in conns:
                    os.close(fd)  # the worker holds its own copies now
            elif self._closed and not self.turns:
                for fd, _ in conns:  # refused after close, and nobody left to take them
                    os.close(fd)
            else:
                # Refused (draining) or the worker is gone: these connections go to another.
                self.refused += len(conns)
                self.pending.extendleft(reversed(conns))
                if worker.id in self.turns:
                    self.turns.remove(worker.id)
            self.distribute()

        worker.request(ipc.internal("newconn", peers=[peer for _, peer in conns]), [fd for fd, _ in conns],
                       on_reply)
