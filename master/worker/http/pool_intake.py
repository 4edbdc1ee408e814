"""A worker's side of the keep-alive pool (what it is and why: master/core/pool.py).

It installs the descriptors the primary sends at the numbers the pool uses, and, whenever the
worker's loop is free, takes the next connection the shared set reports and serves it with the
same Connection code as any other (connection.py). Once the connection's request is answered and
nothing of a next one is buffered, the connection is re-armed in the set, so its next request
goes to whichever worker is free then, and the Connection object stays here, idle, for when the
set reports it to this worker again.

Only one connection is taken per look at the set, and the set is looked at from the hub: a worker
busy computing does not look, so what arrives meanwhile goes to another.
"""
from __future__ import annotations

import _socket
import errno
import fcntl
import os
import socket
import sys
import time
from typing import Any

from gevent.monkey import get_original

from ...core import pool as wire
from ...core.net import close_fd

_epoll = get_original("select", "epoll")
# One turn of the hub takes connections for at most TAKE_FOR seconds (and TAKE_MAX of them): then the
# lane (new connections' first requests), the worker's own connections and its timers get their turn.
# Not much shorter: while the workers compute, the hub turns only at time slices, and each turn must
# take what fast requests have queued meanwhile (2 ms halved the Locust mixed profile's fast requests).
TAKE_FOR = 0.01
TAKE_MAX = 64
BEHIND_FOR = 0.05  # seconds without taking after the set reported a connection we hold no descriptor of


class PoolIntake:
    """Pooled connections this worker holds a descriptor of, by number; takes and re-arms them."""

    def __init__(self, server: Any, fds: list[int], base: int, slots: int, make_connection: Any) -> None:
        wire.raise_descriptor_limit()
        link_fd, epoll_fd, table_fd = fds
        self.server = server
        self.runtime = server.runtime
        self.worker_id = self.runtime.id
        self.link = _socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, link_fd)
        self.link.setblocking(False)
        self.epoll = _epoll.fromfd(epoll_fd)
        self._poll = self.epoll.poll
        self.table = wire.Table(table_fd, slots)
        self.base, self.slots = base, slots
        self.make_connection = make_connection  # (sock, peer) -> a Connection that knows it is pooled
        self.conns: dict[int, Any] = {}  # number -> Connection (idle here, or being served)
        self.gens: dict[int, int] = {}  # number -> the generation of the connection we hold there
        self.stopped = False
        self._loop = loop = server.hub.loop
        self._link_watcher = loop.io(link_fd, 1)
        self._link_watcher.start(self._on_link)
        # The set's readiness is level-triggered: whenever this worker may not take (at its cap, or
        # behind its link), the watcher stops, or the loop would call it again at once, forever.
        self._set_watcher = loop.io(self.epoll.fileno(), 1)
        self._set_watcher.start(self._take)
        self._behind_timer: Any = None  # set while behind: the set reported a connection before its descriptor
        server.cap.on_room(self._resume)

    # -- the link: descriptors coming, connections gone -------------------------------------
    def _on_link(self) -> None:
        for message in wire.queued(self.link):
            if message is None:  # the primary is gone
                self._link_watcher.stop()
                return
            self._caught_up()
            kind, items, fds = message
            if kind == wire.ADD:
                for index, (number, gen, peer) in enumerate(items):
                    if index < len(fds):
                        self._install(number, gen, peer, fds[index])
                for fd in fds[len(items):]:
                    close_fd(fd)
            else:
                for fd in fds:
                    close_fd(fd)
                if kind == wire.DROP:
                    for number, gen, _peer in items:
                        self._drop(number, gen)

    def _install(self, number: int, gen: int, peer: Any, fd: int) -> None:
        if not self.base <= number < self.base + self.slots:
            close_fd(fd)
            return
        old = self.conns.pop(number, None)
        if old is not None:  # its DROP was lost (the link was full): it ended long ago
            self.gens.pop(number, None)
            old.forget()
        elif _in_use(number):  # one of our own descriptors got this high: never clobber it
            close_fd(fd)
            return
        try:
            os.dup2(fd, number, inheritable=False)
        except OSError:
            close_fd(fd)
            return
        os.close(fd)
        sock = _socket.socket(self.server.family, socket.SOCK_STREAM, 0, number)
        sock.setblocking(False)
        self.conns[number] = self.make_connection(sock, peer)
        self.gens[number] = gen

    def _drop(self, number: int, gen: int) -> None:
        conn = self.conns.get(number)
        if conn is None or conn.taken or self.gens.get(number) != gen:
            return  # never had it, serving it (out of the set, it ends at its boundary), or a newer one
        del self.conns[number]
        del self.gens[number]
        conn.forget()

    # -- the set: taking the next request ---------------------------------------------------
    def _take(self) -> None:
        runtime, cap = self.runtime, self.server.cap
        until = time.monotonic() + TAKE_FOR
        for _ in range(TAKE_MAX):
            if time.monotonic() >= until:
                return  # the loop calls us again after the others' turn
            if self.stopped or runtime.draining:
                self.stop()
                return
            if cap.full():
                self._set_watcher.stop()  # cap.on_room resumes
                return
            events = self._poll(0, 1)
            if not events:
                return
            number, mask = events[0]
            gen = self.table.get(number - self.base, wire.GEN)
            conn = self.conns.get(number)
            if conn is None or self.gens.get(number) != gen:
                self._on_link()  # its descriptor may be queued on the link right now
                conn = self.conns.get(number)
            if conn is None or self.gens.get(number) != gen:  # none, or the connection it had before
                self._tell(wire.RETURN, number, gen)
                self._set_watcher.stop()  # until the link brings something, or a moment has passed
                self._behind_timer = self._loop.timer(BEHIND_FOR)
                self._behind_timer.start(self._caught_up)
                return
            self.table.set(number - self.base, wire.OWNER, self.worker_id)
            conn.take(mask)

    def _caught_up(self) -> None:
        if self._behind_timer is not None:
            self._behind_timer.close()
            self._behind_timer = None
            self._resume()

    def _resume(self) -> None:
        if not self.stopped and self._behind_timer is None and not self._set_watcher.active:
            self._set_watcher.start(self._take)

    def keeps(self, conn: Any) -> bool:
        """Whether a pooled connection we are serving may stay with us between requests: only while
        this worker keeps no more than its share of all the keep-alive clients (its own from the
        lane and those it took from the set), this one included.

        Otherwise it goes back to the set after each request, until a worker within its share
        takes it and keeps it. Connections come into the pool given up to rebalance, or idle for a
        moment (a client that pauses); whichever worker is free takes them, and without this the
        one already holding the most kept them as often as not, so a rebalance undid itself and a
        32-client split drifted from 13/19 to 12/20 in 3 s (measured). Connections pooled while
        the workers computed do not all stay with whichever worker took them first, either.
        """
        return wire.may_keep(self.runtime.kept, conn.kept, self.table.share())

    def release(self, conn: Any) -> bool:
        """Re-arm an idle connection in the set; False if the primary took it out (it then ends)."""
        slot = conn.fd - self.base
        self.table.set(slot, wire.IDLE_SINCE_NS, time.monotonic_ns())
        self.table.set(slot, wire.OWNER, 0)
        try:
            self.epoll.modify(conn.fd, wire.ARM)
        except OSError:
            self.table.set(slot, wire.OWNER, self.worker_id)  # ours to end
            return False
        return True

    def ended(self, conn: Any) -> None:
        """The connection is over (closed by either side): out of the set, and the primary is told.

        The caller shuts it down first: other descriptors of it stay open until the primary's DROP.
        """
        number = conn.fd
        try:
            self.epoll.unregister(number)
        except OSError:
            pass
        self.table.set(number - self.base, wire.OWNER, 0)
        if self.conns.get(number) is conn:
            del self.conns[number]
            self._tell(wire.CLOSED, number, self.gens.pop(number))

    def _tell(self, kind: bytes, number: int, gen: int) -> None:
        try:
            wire.send(self.link, kind, [(number, gen, None)])
        except OSError:
            # Full (the primary is far behind) or gone. A lost CLOSED leaves the primary's copy until
            # its idle timeout; a lost RETURN leaves the connection until then too.
            print(f"[worker {self.worker_id}] pool link: could not send {kind!r} for {number}", file=sys.stderr)

    def stop(self) -> None:
        """Take nothing more from the set (a drain): what this worker is serving ends as usual."""
        self.stopped = True
        self._set_watcher.stop()
        if self._behind_timer is not None:
            self._behind_timer.close()
            self._behind_timer = None


def _in_use(number: int) -> bool:
    try:
        fcntl.fcntl(number, fcntl.F_GETFD)
    except OSError as exc:
        return exc.errno != errno.EBADF
    return True
