"""The primary's side of the keep-alive pool (what it is and why: master/core/pool.py).

The primary puts in the pool the idle keep-alive connections workers give back, gives every
worker a descriptor of each, closes them when they end, times out idle ones, and ends those a
dead worker was holding. Nothing is read here.

A pooled connection's requests are never retried on another worker when its worker is killed:
only a connection's first request is peeked at (master/worker/retryable_socket.py), and that one
was served before the connection came into the pool. So what a dead worker held is closed, as a
keep-alive connection a dead worker served is without the pool.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import time
from collections import deque
from typing import Any

from ...core import pool as wire
from ...core.lane import Conn
from . import tcp_state

REVOKE_AFTER = 0.2  # seconds an idle connection stays out of the set before the primary closes it

log = logging.getLogger("master.rr")


class Link:
    """The primary's end of one worker's pool link, with what could not be written yet, in order."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.backlog: deque[tuple[bytes, list, list[int]]] = deque()

    def send(self, kind: bytes, items: list, fds: list[int] | None = None) -> None:
        self.backlog.append((kind, items, fds or []))
        self.flush()

    def flush(self) -> None:
        while self.backlog:
            kind, items, fds = self.backlog[0]
            try:
                wire.send(self.ours, kind, items, fds)
            except BlockingIOError:
                return  # the worker is behind: the rest waits, in order (the next tick tries again)
            except OSError:
                self.backlog.clear()  # the worker is gone
                return
            self.backlog.popleft()

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


class Pool:
    """Pooled connections: the shared set, the table, and one link per worker."""

    def __init__(self, loop: Any) -> None:
        wire.raise_descriptor_limit()
        self.loop = loop
        self.base, self.slots = wire.number_range()
        self.epoll = select.epoll()
        self.table = wire.Table.create(self.slots)
        self.members: dict[int, Any] = {}  # number -> peer address
        self.links: dict[int, Link] = {}
        self.takers: set[int] = set()  # workers that take from the set: joined, not draining
        self.revoking: dict[int, tuple[int, float]] = {}  # idle past the timeout, out of the set: (stamp, since)
        self.keepalive_timeout = 5.0
        self.pooled = self.expired = 0  # ever

    def __len__(self) -> int:
        return len(self.members)

    # -- workers ----------------------------------------------------------------------------
    def join(self, worker_id: int) -> tuple[list[int], dict]:
        """A worker's link: the descriptors and fields for its queryServer reply. It gets every
        connection pooled so far."""
        link = Link()
        self.links[worker_id] = link
        self.takers.add(worker_id)
        self.table.set(self.slots, wire.TAKERS, len(self.takers))
        self.loop.add_reader(link.ours.fileno(), lambda: self._on_link(link))
        numbers = list(self.members)
        for start in range(0, len(numbers), wire.MAX_PER_MESSAGE):
            batch = numbers[start:start + wire.MAX_PER_MESSAGE]
            link.send(wire.ADD, [self._item(n) for n in batch], batch)
        fds = [link.theirs.fileno(), self.epoll.fileno(), self.table.fd]
        return fds, {"pool_base": self.base, "pool_slots": self.slots}

    def stop_taking(self, worker_id: int) -> None:
        """A worker drains (or exited): it takes nothing more, so the others share the clients out
        without it. Its link stays until it exits: it still ends what it is serving."""
        self.takers.discard(worker_id)
        self.table.set(self.slots, wire.TAKERS, len(self.takers))

    def leave(self, worker_id: int) -> int:
        """A worker exited: close what it was holding (how many)."""
        link = self.links.pop(worker_id, None)
        self.stop_taking(worker_id)
        if link is not None:
            self.loop.remove_reader(link.ours.fileno())
            link.close()
        held = [n for n in self.members if self.table.get(n - self.base, wire.OWNER) == worker_id]
        for number in held:
            self.table.set(number - self.base, wire.OWNER, 0)
            self._end(number, gently=True)  # an answer it sent may still be on its way
        return len(held)

    # -- connections ------------------------------------------------------------------------
    def add(self, conns: list[Conn]) -> list[Conn]:
        """Pool these idle connections; returns those that do not fit (the caller parks them)."""
        left: list[Conn] = []
        added: list[wire.Item] = []
        for conn in conns:
            fd, peer = conn
            if len(self.members) >= self.slots:
                left.append(conn)
                continue
            try:
                number = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, self.base)
            except OSError:
                left.append(conn)
                continue
            if number >= self.base + self.slots:
                os.close(number)
                left.append(conn)
                continue
            os.close(fd)
            slot = number - self.base
            self.table.set(slot, wire.OWNER, 0)
            self.table.set(slot, wire.IDLE_SINCE_NS, time.monotonic_ns())
            self.table.set(slot, wire.GEN, self.table.get(slot, wire.GEN) + 1)  # a new connection at this number
            self.members[number] = peer
            added.append(self._item(number))
        self.table.set(self.slots, wire.MEMBERS, len(self.members))
        for start in range(0, len(added), wire.MAX_PER_MESSAGE):
            batch = added[start:start + wire.MAX_PER_MESSAGE]
            for link in self.links.values():
                link.send(wire.ADD, batch, [n for n, _, _ in batch])
        # Armed only once every worker's descriptor is on its way: a worker the set reports it to
        # finds it in its link (or, if its link was full, hands it back: RETURN).
        for number, _, _ in added:
            self._arm(number, new=True)
        self.pooled += len(added)
        return left

    def _arm(self, number: int, new: bool = False) -> None:
        try:
            if new:
                self.epoll.register(number, wire.ARM)
            else:
                self.epoll.modify(number, wire.ARM)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                self.epoll.register(number, wire.ARM)
            elif exc.errno != errno.EEXIST:
                raise

    def _on_link(self, link: Link) -> None:
        for message in wire.queued(link.ours):
            if message is None:  # the worker is gone (leave() follows when its exit is seen)
                self.loop.remove_reader(link.ours.fileno())
                return
            kind, items, fds = message
            for fd in fds:  # workers never send descriptors up: close anything that came
                os.close(fd)
            for number, gen, _peer in items:
                if number not in self.members or gen != self.table.get(number - self.base, wire.GEN):
                    continue  # about a connection that had this number before
                if kind == wire.CLOSED:
                    self._forget(number)
                elif kind == wire.RETURN and number not in self.revoking:
                    self._arm(number)

    def _item(self, number: int) -> wire.Item:
        return number, self.table.get(number - self.base, wire.GEN), self.members[number]

    def _forget(self, number: int) -> None:
        """A worker ended this connection: close ours, tell the others."""
        item = self._item(number)
        del self.members[number]
        self.table.set(self.slots, wire.MEMBERS, len(self.members))
        self.revoking.pop(number, None)
        try:
            self.epoll.unregister(number)
        except OSError:
            pass  # the worker removed it already
        os.close(number)
        for link in self.links.values():
            link.send(wire.DROP, [item])

    def _end(self, number: int, gently: bool = False) -> None:
        """End a connection ourselves: out of the set, shut down (workers hold copies), forgotten."""
        try:
            self.epoll.unregister(number)
        except OSError:
            pass
        if gently:
            tcp_state.close_gently(os.dup(number))  # read away what is unread, so the end is a FIN
        try:
            socket.socket(fileno=os.dup(number)).shutdown(socket.SHUT_RDWR)  # the dup is closed with it
        except OSError:
            pass
        self._forget(number)

    # -- the periodic look -------------------------------------------------------------------
    def tick(self, kept_by_workers: int = 0) -> None:
        """Flush links that were full; count the keep-alive clients; close connections idle past
        the keep-alive timeout.

        `kept_by_workers`: the connections the workers keep between requests now (their boards'
        KEPT). With those idle in the set, they are every keep-alive client, which the workers
        share out (Table.share).

        Idle ones leave the set first and are closed a moment later, once nobody took one in
        between (a worker the set had just reported it to marks the slot at once).
        """
        for link in self.links.values():
            link.flush()
        now_ns = time.monotonic_ns()
        now = time.monotonic()
        for number, (stamp, since) in list(self.revoking.items()):
            slot = number - self.base
            if now - since < REVOKE_AFTER:
                continue
            if self.table.get(slot, wire.OWNER) == 0 and self.table.get(slot, wire.IDLE_SINCE_NS) == stamp:
                self.expired += 1
                self._end(number)
            else:
                del self.revoking[number]  # a worker took it: it finds it out of the set and ends it
        limit = int(self.keepalive_timeout * 1e9) if self.keepalive_timeout else 0
        idle_in_set = 0
        for number in self.members:
            slot = number - self.base
            if self.table.get(slot, wire.OWNER) != 0:
                continue  # a worker is serving it (or keeps it): counted on its board
            idle_in_set += 1
            if limit and number not in self.revoking and now_ns - self.table.get(slot, wire.IDLE_SINCE_NS) >= limit:
                try:
                    self.epoll.unregister(number)
                except OSError:
                    continue
                self.revoking[number] = (self.table.get(slot, wire.IDLE_SINCE_NS), now)
        self.table.set(self.slots, wire.CLIENTS, kept_by_workers + idle_in_set)

    def close(self) -> list[Conn]:
        """The listener closes: every connection nobody holds leaves the set and is returned, for
        the caller to hand to the draining workers; those held are ended by their holders."""
        idle: list[Conn] = []
        for number in list(self.members):
            try:
                self.epoll.unregister(number)
            except OSError:
                pass
            if self.table.get(number - self.base, wire.OWNER) == 0:
                item = self._item(number)
                del self.members[number]
                self.table.set(self.slots, wire.MEMBERS, len(self.members))
                idle.append((number, item[2]))
                for link in self.links.values():
                    link.send(wire.DROP, [item])
        return idle
