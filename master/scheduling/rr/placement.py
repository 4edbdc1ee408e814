"""Where a connection goes: pure decisions over each worker's load, unit-tested without sockets.

Two questions, two orders of preference:
- a **new connection** will stay a while (keep-alive clients): it goes to the worker with the
  fewest connections (open ones plus those handed over and not read yet), then the least busy;
- the **next request of a parked connection** (an idle keep-alive connection a worker gave
  back) wants an answer now: it goes to the least busy worker, then the one with fewest
  connections. Never back to the worker that gave it up while that one holds more than its
  share of keep-alive connections: it gave it up to rebalance, and the least busy worker is
  often exactly the one that holds the keep-alive clients (new connections, placed by count,
  pile onto the other), so it would come straight back and the imbalance would never end.
Ties go in turn order (the order the caller lists the workers in), so equal loads keep the
strict round-robin spread. A worker without room (too many handed over and unread, or stalled)
gets nothing.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerLoad:
    """One worker's figures at this moment."""

    unread: int  # handed over, not read yet
    connections: int  # open in the worker
    busy: int  # requests in flight plus requests waiting to be served
    room: int  # how many more it may be handed now (0: none)
    kept: int = 0  # open keep-alive connections (clients that stay)


def place_new(loads: list[WorkerLoad], count: int) -> list[int]:
    """For each of `count` new connections, the index of the worker it goes to (fewer if room runs out)."""
    heap = [(w.connections + w.unread, w.busy, i) for i, w in enumerate(loads) if w.room > 0]
    heapq.heapify(heap)
    given = [0] * len(loads)
    chosen: list[int] = []
    while heap and len(chosen) < count:
        held, busy, i = heapq.heappop(heap)
        chosen.append(i)
        given[i] += 1
        if given[i] < loads[i].room:
            heapq.heappush(heap, (held + 1, busy, i))
    return chosen


OVER_SHARE = 2  # keep-alive connections above the lightest worker's that make a worker over its share


def place_request(loads: list[WorkerLoad], giver: int | None = None) -> int | None:
    """The worker for a request that has just arrived on a parked connection; None if nobody has room.

    `giver`: the index of the worker that gave the connection up, if it is still there.
    """
    candidates = [(w.busy + w.unread, w.connections, i) for i, w in enumerate(loads) if w.room > 0]
    if giver is not None and len(candidates) > 1:
        lightest = min(w.kept for w in loads if w.room > 0)
        if loads[giver].kept - lightest >= OVER_SHARE:
            candidates = [c for c in candidates if c[2] != giver] or candidates
    return min(candidates)[2] if candidates else None


STALL_AFTER = 1.0  # seconds with connections waiting unread and no progress: the worker is stalled


def stalled(unread: int, unread_since: float | None, progress_at: float, now: float) -> bool:
    """Whether a worker has had connections waiting unread, and done nothing, for STALL_AFTER.

    A stopped or CPU-bound worker reads nothing and finishes nothing; what waits in its lane
    would wait until the watchdog acts (30 s by default). The primary takes it back sooner.
    """
    if not unread or unread_since is None:
        return False
    return now - max(unread_since, progress_at) >= STALL_AFTER
