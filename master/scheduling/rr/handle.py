"""`rr` (after Node's RoundRobinHandle): the primary accepts and hands each connection to a worker.

Connections travel down each worker's handoff lane (master/core/lane.py). Each goes to the
worker with the fewest connections (placement.py: the load boards give each worker's
figures as they change); loads within a connection or two take turns, so the spread stays
strict. A worker with MAX_IN_FLIGHT connections it has not read yet sits out while another
has room (Node allows one unacknowledged handle; more let a busy primary put several
connections in one record). Only when every worker is that far behind does the primary wait
to hear from one (a PING/PONG round trip). At start-up, connections wait up to STARTUP_WAIT
for the first workers to join, so the first to listen does not take them all.

Idle keep-alive connections a worker gives back (to rebalance, or idle for a while) are
parked here (parking.py) and their next request goes to the least busy worker. A worker
that has connections waiting unread and gets nothing done for placement.STALL_AFTER (stopped,
or stuck in a CPU-bound request) gets nothing more, and what waits in its lane is taken back
and served by the others, well before the watchdog's deadline.

The cap is a stall guard, not a pace: under load the primary runs as SCHED_BATCH
(master/core/cpu_class.py) and hands connections over in bursts, and a worker that is merely
busy for a moment falls several behind; a lower cap tips the spread under bursts of new
connections. A worker stalled for real (a long CPU-bound request) still holds at most
MAX_IN_FLIGHT waiting clients.

Nothing handed over is ever lost to a worker that drains or dies: a draining worker sends
unserved connections back, and what a dead worker never read is read back from its lane;
both go to the next worker.

A worker killed from outside (SIGKILL it did not get from us: `docker kill`, the OOM
killer, `ctl kill-worker`) may also have been serving requests. Workers peek at an
idempotent request instead of reading it until they answer
(master/worker/retryable_socket.py), so such a request is still whole in the kernel's queue and another worker serves it: the
client sees a slower answer rather than a reset, as behind nginx's retry of idempotent
requests. Only once per connection (a request that gets its worker killed is not passed
on a second time), never for a worker that crashed by itself, timed out, or was killed
by a drain deadline, and not at all with retry_idempotent off.
"""
from __future__ import annotations

import errno
import logging
import os
from collections import deque
from typing import Any

from ...core import board as fields
from ...core.lane import MAX_PER_RECORD, Conn
from ..base import STARTUP_WAIT, Handle, Reply
from . import placement, rescue, tcp_state
from .lane import Lane
from .parking import Parking
from .pool import Pool

MAX_QUEUED = 128  # accepted but not yet handed over; past this the kernel backlog holds them
MAX_IN_FLIGHT = 16  # connections a worker may leave unread while another has room; then we wait
HELD = 32  # copies kept of each worker's latest connections, to rescue what a dying worker took
# (enough to cover a slow request while many fast ones pass it; a copy costs one descriptor)
TICK = 0.25  # seconds between checks for stalled workers and parked connections past their timeout
EMFILE_PAUSE = 0.2  # seconds without accepting after the primary ran out of descriptors

log = logging.getLogger("master.rr")


class RoundRobinHandle(Handle):
    """Accepts in the primary, distributes to workers in turn, re-routes what comes back."""

    policy = "rr"
    retry_idempotent = True  # the arbiter sets it from --retry-idempotent before any worker asks
    keepalive_timeout = 5.0  # ... and this from --keepalive-timeout (parked connections obey it)
    keepalive_pool = False  # ... and this from --keepalive-pool (master/core/pool.py)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sock.setblocking(False)
        self.turns: deque[int] = deque()  # worker ids, next in turn first
        self.placed: dict[int, int] = {}  # new connections placed per worker, rebased (placement.settle_placed)
        self.lanes: dict[int, Lane] = {}  # kept until the worker exits, even once removed
        self.boards: dict[int, Any] = {}  # the same: each worker's load board, draining ones too
        self.held: dict[int, deque[Conn]] = {}  # our copies of its latest HELD connections
        # (descriptor, peer address): raw, not socket objects, since the primary only passes
        # them on and closes them; the address travels along so workers need no getpeername.
        self.pending: deque[Conn] = deque()
        self.handed = 0
        self.refused = 0  # sent back by a draining worker
        self.recovered = 0  # read back from a dead worker's lane, or taken by it and never started
        self.retried = 0  # idempotent requests a killed worker was serving, given to another
        self.retried_peers: set[Any] = set()  # ... whose connections we still hold: never twice
        self.parking = Parking(self.loop, self._place_request, self.keepalive_timeout)
        self.pool: Pool | None = None  # made when the first worker asks, once keepalive_pool is known
        self.stalled: set[int] = set()  # workers that get nothing until they make progress again
        self.stolen = 0  # taken back unread from stalled workers
        self.first_join: float | None = None
        self.emfile_logged_at = float("-inf")
        self._accepting = False
        self._closed = False
        self.loop.call_later(TICK, self._tick, ref=False)

    def add(self, worker: Any, reply: Reply) -> None:
        """Admit a worker: give it a lane (in the reply) and its turn at once."""
        lane = Lane()
        self.lanes[worker.id] = lane
        self.held[worker.id] = deque()
        self.workers[worker.id] = worker
        if worker.board is not None:
            self.boards[worker.id] = worker.board
            worker.board[fields.TAKES_BACK] = 1  # until the listener closes (board.TAKES_BACK)
        self.turns.append(worker.id)
        self.placed[worker.id] = placement.placed_for_newcomer(self.placed)
        self.loop.add_reader(lane.ours.fileno(), lambda: self._on_lane_readable(worker.id, lane))
        worker.once("exit", lambda _code, signal: self._worker_exited(worker, signal))
        fds, pooled = [lane.theirs.fileno()], {}
        if self.keepalive_pool and self.pool is None and not self._closed:
            self.pool = Pool(self.loop)
        if self.pool is not None:
            pool_fds, pooled = self.pool.join(worker.id)
            fds += pool_fds
        reply(fds=fds, ok=True, policy=self.policy, port=self.port,
              family=int(self.sock.family), peek=self.retry_idempotent, **pooled)
        if self.first_join is None:
            self.first_join = self.loop.clock()
            self.loop.call_later(STARTUP_WAIT, self.distribute)
        self.distribute()

    def remove(self, worker: Any) -> bool:
        """Stop handing connections to `worker` (its lane stays until it exits)."""
        self.workers.pop(worker.id, None)
        self.placed.pop(worker.id, None)
        if self.pool is not None:
            self.pool.stop_taking(worker.id)  # it drains: no share of the pool's clients for it
        if worker.id in self.turns:
            self.turns.remove(worker.id)
        if not self.workers and not self.persistent:
            self._set_accepting(False)
        return not self.workers

    def close(self) -> None:
        """Close the listener without dropping what is queued.

        Connections the kernel already queued are accepted, and every queued connection is
        handed out now, past the in-flight cap: a worker told to disconnect afterwards reads
        its lane dry before it starts draining, so it serves them.
        """
        if self._closed:
            return
        self._closed = True
        for board in self.boards.values():
            board[fields.TAKES_BACK] = 0  # draining workers close their keep-alive connections now
        self._set_accepting(False)
        self._accept_queued(4096)
        super().close()
        self.pending.extend(self.parking.close())
        if self.pool is not None:
            self.pending.extend(self.pool.close())
        self.distribute()

    # -- accepting --------------------------------------------------------------------------
    def _set_accepting(self, wanted: bool) -> None:
        if wanted == self._accepting or (wanted and self._closed):
            return
        self._accepting = wanted
        if wanted:
            self.loop.add_reader(self.sock.fileno(), self._on_acceptable)
        else:
            self.loop.remove_reader(self.sock.fileno())

    def _accept_queued(self, limit: int) -> None:
        accept, pending = self.sock._accept, self.pending  # raw: no socket object to build and drop
        for _ in range(limit):
            try:
                pending.append(accept())
            except OSError as exc:  # EAGAIN: queue empty; ECONNABORTED: the next readiness tries again
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._out_of_descriptors()
                return

    def _out_of_descriptors(self) -> None:
        """No descriptor for a new connection: pause accepting (the listener stays readable, and
        retrying at once would spin); the connections wait in the kernel's queue meanwhile."""
        if not self._accepting:
            return
        now = self.loop.clock()
        if now - self.emfile_logged_at >= 10.0:
            self.emfile_logged_at = now
            log.warning("Out of descriptors accepting connections (EMFILE): pausing %.1f s; they wait in the "
                        "kernel's queue meanwhile", EMFILE_PAUSE)
        self._set_accepting(False)
        self.loop.call_later(EMFILE_PAUSE, self.distribute)

    def _on_acceptable(self) -> None:
        self._accept_queued(MAX_QUEUED - len(self.pending))
        self.distribute()

    # -- handing over -----------------------------------------------------------------------
    def _loads(self, turns: list[int]) -> list[placement.WorkerLoad]:
        """Each worker's figures now: the kernel's unread count, the board's connections and work."""
        loads = []
        for worker_id in turns:
            lane, board = self.lanes[worker_id], self.workers[worker_id].board
            unread = lane.unread if lane.pinged else lane.refresh()
            full = board is not None and board[fields.FULL]
            room = 0 if worker_id in self.stalled or lane.pinged or full else MAX_IN_FLIGHT - unread
            if board is None:
                loads.append(placement.WorkerLoad(unread, 0, 0, room))
                continue
            loads.append(placement.WorkerLoad(unread, board[fields.CONNECTIONS],
                                              board[fields.IN_FLIGHT] + board[fields.WAITING], room,
                                              board[fields.KEPT]))
        return loads

    def _starting(self) -> bool:
        """Whether start-up still holds connections back for the first workers."""
        if not self.expected:
            return False
        if len(self.workers) >= self.expected or (
                self.first_join is not None and self.loop.clock() - self.first_join >= STARTUP_WAIT):
            self.expected = 0
            return False
        return True

    def distribute(self) -> None:
        """Hand queued connections out by load, oldest connection first."""
        if self._closed:
            self._hand_out_everything()
            return
        pending, turns = self.pending, list(self.turns)
        if pending and turns and not self._starting():
            placed = self.placed
            chosen = placement.place_new(self._loads(turns), len(pending),
                                         [placed.get(worker_id, 0) for worker_id in turns])
            shares: dict[int, list[Conn]] = {}
            for index in chosen:
                shares.setdefault(turns[index], []).append(pending.popleft())
            if chosen:
                self.turns.rotate(-(chosen[-1] + 1))  # ties next go to whoever follows the last one served
            for worker_id, conns in shares.items():
                if self._send(worker_id, conns):
                    if worker_id in placed:
                        placed[worker_id] += len(conns)
                else:
                    pending.extendleft(reversed(conns))
            self.placed = placement.settle_placed(placed)
            if pending:
                # Every worker is MAX_IN_FLIGHT behind: each says when it has caught up (a PONG wakes us).
                for worker_id in self.turns:
                    self.lanes[worker_id].ping()
        # Backpressure: accept only while the queue has room.
        self._set_accepting(len(pending) < MAX_QUEUED and bool(self.workers or self.persistent))

    def _place_request(self, conn: Conn, giver: int | None = None) -> None:
        """A parked connection's next request has arrived: the least busy worker serves it (the
        one that gave it up only if it is not over its share)."""
        turns = list(self.turns)
        given_by = turns.index(giver) if giver in turns else None
        index = placement.place_request(self._loads(turns), given_by) if turns and not self._closed else None
        if index is None or not self._send(turns[index], [conn]):
            self.pending.appendleft(conn)
            self.distribute()

    def _hand_out_everything(self) -> None:
        """Closed: the workers are about to drain, so each takes its share now, cap or not."""
        candidates = [worker_id for worker_id in self.turns if worker_id in self.lanes]
        while self.pending and candidates:
            shares: dict[int, list[Conn]] = {worker_id: [] for worker_id in candidates}
            for i in range(len(self.pending)):
                shares[candidates[i % len(candidates)]].append(self.pending.popleft())
            for worker_id, conns in shares.items():
                for start in range(0, len(conns), MAX_PER_RECORD):
                    if not self._send(worker_id, conns[start:start + MAX_PER_RECORD]):
                        self.pending.extend(conns[start:])  # its queue is full: try the others
                        candidates.remove(worker_id)
                        break
        while self.pending:  # nobody left who could serve them
            self._close_conn(self.pending.popleft())

    def _send(self, worker_id: int, conns: list[Conn]) -> bool:
        """Write one record to the worker's lane; False (nothing sent) when its queue is full."""
        lane = self.lanes[worker_id]
        try:
            lane.send(conns, self.loop.clock())
        except OSError:  # full (or unusable): the caller keeps them, the worker sits out
            lane.unread = max(lane.unread, MAX_IN_FLIGHT)
            return False
        self.handed += len(conns)
        held = self.held[worker_id]
        held.extend(conns)
        while len(held) > HELD:
            self._close_conn(held.popleft())  # old enough to have been read: the worker has its own copy
        return True

    # -- coming back ------------------------------------------------------------------------
    def _on_lane_readable(self, worker_id: int, lane: Lane) -> None:
        conns, idle, pong = lane.returned()
        if idle:
            self._park(worker_id, idle)
        if conns:
            self._take_back(worker_id, conns)
        elif pong:
            self.distribute()  # it caught up: its turn can come again

    def _park(self, worker_id: int, conns: list[Conn]) -> None:
        """A worker gave these up between requests: watch them until their next request."""
        self._release_held(worker_id, {peer for _, peer in conns})
        if self.pool is not None and not self._closed:
            conns = self.pool.add(conns)  # what does not fit is parked
        for conn in conns:
            if self._closed or not self.parking.park(conn, worker_id):
                self.pending.append(conn)
        if self.pending:
            self.distribute()

    def _take_back(self, worker_id: int, conns: list[Conn]) -> None:
        """A draining worker sent these back: they go to the next worker."""
        self._release_held(worker_id, {peer for _, peer in conns})
        self.refused += len(conns)
        self.placed.pop(worker_id, None)
        if worker_id in self.turns:
            self.turns.remove(worker_id)  # it is draining, whether or not we were told yet
        self.pending.extendleft(reversed(conns))
        self.distribute()

    # -- the periodic look: stalled workers, parked connections past their timeout -----------
    def _tick(self) -> None:
        if self._closed:
            return
        self.parking.keepalive_timeout = self.keepalive_timeout
        self.parking.expire()
        if self.pool is not None:
            self.pool.keepalive_timeout = self.keepalive_timeout
            self.pool.tick(sum(w.board[fields.KEPT] for w in self.workers.values() if w.board is not None))
        now = self.loop.clock()
        for worker_id in list(self.turns):
            self._check_stall(worker_id, now)
        if self.pending:
            self.distribute()
        self.loop.call_later(TICK, self._tick, ref=False)

    def _check_stall(self, worker_id: int, now: float) -> None:
        lane, board = self.lanes[worker_id], self.workers[worker_id].board
        progress = board[fields.PROGRESS] if board is not None else 0
        if progress != lane.progress_seen:
            lane.progress_seen, lane.progress_at = progress, now
        if worker_id in self.stalled:
            # Its loop turns again (a heartbeat): it can take connections again.
            if board is None or board[fields.HEARTBEATS] != lane.heartbeats_seen or lane.progress_at == now:
                self.stalled.discard(worker_id)
                log.info("Worker %s is making progress again: it gets connections again",
                         self.workers[worker_id].pid)
            return
        unread = lane.refresh()
        if board is not None and board[fields.FULL]:
            # At its cap, not stalled: what still waits in its lane goes to a worker with room.
            if unread and lane.unread_since is not None and now - lane.unread_since >= placement.STALL_AFTER:
                self._take_unread(worker_id, "is at its connection cap")
            return
        if not placement.stalled(unread, lane.unread_since, lane.progress_at, now):
            return
        self.stalled.add(worker_id)
        lane.heartbeats_seen = board[fields.HEARTBEATS] if board is not None else 0
        self._take_unread(worker_id, f"is stalled (nothing done for {now - lane.progress_at:.1f} s with "
                                     "connections waiting)")

    def _take_unread(self, worker_id: int, why: str) -> None:
        """Take back what waits unread in a worker's lane, for the others."""
        taken = self.lanes[worker_id].unclaimed()
        self._release_held(worker_id, {peer for _, peer in taken})
        self.stolen += len(taken)
        log.warning("Worker %s %s: %d waiting connections go to other workers", self.workers[worker_id].pid,
                    why, len(taken))
        self.pending.extendleft(reversed(taken))

    def _worker_exited(self, worker: Any, signal: str | None) -> None:
        """Re-route what the dead worker never read or never started; release its lane."""
        lane = self.lanes.pop(worker.id, None)
        self.boards.pop(worker.id, None)
        if lane is None:
            return
        # Once the listener is closed the primary no longer calls remove(): forget it here too.
        self.workers.pop(worker.id, None)
        self.placed.pop(worker.id, None)
        if worker.id in self.turns:
            self.turns.remove(worker.id)
        self.loop.remove_reader(lane.ours.fileno())
        self.stalled.discard(worker.id)
        returned, idle, _pong = lane.returned()
        unclaimed = lane.unclaimed()
        lane.close()
        returned += idle  # given up idle just before it died: placed like the rest
        # Killed from outside, not by its own doing or ours: what it was serving is not to blame.
        retry = (self.retry_idempotent and signal == "SIGKILL" and not worker.exited_after_disconnect
                 and not worker.kill_reason)
        # Our copies of what it read: the ones above are the same connections (same peer).
        rescued, retried, lost = self._release_held(worker.id, {peer for _, peer in returned + unclaimed},
                                                    dead=True, retry=retry)
        if self.pool is not None:
            self.pool.leave(worker.id)
        self.refused += len(returned)
        self.recovered += len(unclaimed) + len(rescued)
        moved = len(returned) + len(unclaimed) + len(rescued)
        if moved or lost:
            log.info("Worker %s's connections: %d passed to other workers (%d it never read, %d it never started, "
                     "%d requests retried); %d it had begun closed", worker.pid, moved,
                     len(returned) + len(unclaimed), len(rescued) - retried, retried, lost)
        self.pending.extendleft(reversed(returned + rescued + unclaimed))
        self.distribute()

    def _release_held(self, worker_id: int, peers: set[Any], dead: bool = False,
                      retry: bool = False) -> tuple[list[Conn], int, int]:
        """Close our copies of `peers`; once it is dead, of all.

        Returns the copies to pass on, how many of those are retried requests, and how
        many begun connections were closed.
        """
        held = self.held.get(worker_id)
        if held is None:
            return [], 0, 0
        rescued: list[Conn] = []
        retried = lost = 0
        for conn in list(held):
            fd, peer = conn
            if peer not in peers and not dead:
                continue
            held.remove(conn)
            if peer is None or peer in peers:  # another descriptor of it travels on (or unknown)
                self._close_conn(conn)
                continue
            fate = rescue.fate(tcp_state.progress(fd), retry=retry, retried_before=peer in self.retried_peers)
            if fate in (rescue.RETRY, rescue.PASS_ON):
                rescued.append(conn)
                if fate == rescue.RETRY:
                    retried += 1
                    self.retried_peers.add(peer)
            elif fate == rescue.CLOSE:
                self._close_conn(conn)
            else:
                lost += 1
                self._close_conn(conn, gently=True)  # an answer it sent may still be on its way
        if dead:
            del self.held[worker_id]
        self.retried += retried
        return rescued, retried, lost

    def _close_conn(self, conn: Conn, gently: bool = False) -> None:
        """Close our descriptor of a connection (forgetting that it was retried)."""
        if gently:
            tcp_state.close_gently(conn[0])
        else:
            os.close(conn[0])
        if self.retried_peers:  # nearly always empty: skip the lookup on the hot path
            self.retried_peers.discard(conn[1])
