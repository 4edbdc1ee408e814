"""Where a connection goes: pure decisions over each worker's load, unit-tested without sockets.

Two questions, two orders of preference:
- a **new connection** goes to a worker that is not heavier than the lightest: not more than
  KEPT_WITHIN keep-alive clients more (a new connection is often one more of those), nor more
  than WORK_WITHIN work more (handoffs not read yet, requests in flight or waiting). Among
  those, the worker placed the fewest so far takes it, so a worker passed over for a moment
  gets its count back once it has caught up. Open connections with none of these (read from
  the lane, their request not parsed yet; answered, closing) do not count: they are a worker
  that shares its CPU and is a moment behind;
- the **next request of a parked connection** (an idle keep-alive connection a worker gave
  back) wants an answer now: it goes to the least busy worker, then the one with fewest
  connections. Never back to the worker that gave it up while that one holds more than its
  share of keep-alive connections: it gave it up to rebalance, and the least busy worker is
  often exactly the one that holds the keep-alive clients (new connections, placed by what
  is outstanding, pile onto the other), so it would come straight back and the imbalance would never end.
Ties go in turn order (the order the caller lists the workers in), so equal loads keep the
strict round-robin spread. A worker without room (too many handed over and unread, or stalled)
gets nothing.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerLoad:
    """One worker's figures at this moment."""

    unread: int  # handed over, not read yet
    connections: int  # open in the worker
    busy: int  # requests in flight plus requests waiting to be served
    room: int  # how many more it may be handed now (0: none)
    kept: int = 0  # open keep-alive connections (clients that stay)


# Within these a worker counts as no heavier than the lightest, and the counts decide (place_new).
# Keep-alive clients stay, so 2 more is already a lasting imbalance: past it, the lighter worker
# takes the new connections (after a crash, the newcomer takes every client that reconnects).
KEPT_WITHIN = 2
# Work outstanding (handoffs unread, requests in flight) comes and goes in milliseconds. Between
# equal workers on a shared machine it differs by up to 7 all the time: with 16 clients opening a
# connection per request, the worker that shared its CPU with the master held 3 to 7 more than
# the other at most placements (instrumented), and a band of 2 gave it 27-35% of 2,000 new
# connections (Jain 0.82-0.93; the bench's full run 0.83). Past 8, a worker is really behind (a
# request computing, a stall): the others take the new connections until it has caught up.
WORK_WITHIN = 8


def work(load: WorkerLoad) -> int:
    """What a new connection would queue behind on this worker: handoffs it has not read and
    requests in flight or waiting. Not its open connections: a worker a moment behind holds more
    of those (read, their request not parsed yet; or answered and closing) without being loaded."""
    return load.unread + load.busy


def place_new(loads: list[WorkerLoad], count: int, placed: list[int] | None = None) -> list[int]:
    """For each of `count` new connections, the index of the worker it goes to (fewer if room runs out).

    Each goes, among the workers with room that are within KEPT_WITHIN keep-alive clients and
    WORK_WITHIN work (see `work`) of the lightest, to the one placed the fewest new connections so
    far (`placed`, one count per worker; ties in turn order). The counts make up later for a
    moment of load: a worker passed over while it was behind gets the next ones once it has
    caught up, so equal workers end with equal counts (see `settle_placed`). Each connection
    placed counts as work and as a keep-alive client on its worker for the rest of the batch.
    """
    busy = [work(w) for w in loads]
    kept = [w.kept for w in loads]
    room = [w.room for w in loads]
    given = list(placed) if placed is not None else [0] * len(loads)
    chosen: list[int] = []
    while len(chosen) < count:
        open_ = [i for i in range(len(loads)) if room[i] > 0]
        if not open_:
            break
        most_kept = min(kept[i] for i in open_) + KEPT_WITHIN
        most_work = min(busy[i] for i in open_) + WORK_WITHIN
        light = [i for i in open_ if kept[i] <= most_kept and busy[i] <= most_work]
        if light:
            index = min(light, key=lambda i: (given[i], i))
        else:  # the fewest clients, but far behind: the one with the least work
            index = min(open_, key=lambda i: (busy[i], kept[i], i))
        chosen.append(index)
        busy[index] += 1
        kept[index] += 1
        room[index] -= 1
        given[index] += 1
    return chosen


# How far behind the most placed worker another's count may fall: what it can make up later. A
# worker passed over for a few milliseconds (descheduled, or computing) falls 10 to 20 behind at
# a few thousand connections a second; one that is slower for good (a shared CPU) must not pile
# up a credit that steers every new connection to it for minutes once it is free.
CATCH_UP_MAX = 32


def settle_placed(placed: dict[int, int]) -> dict[int, int]:
    """Counts rebased to start at 0 and lifted to at most CATCH_UP_MAX below the highest."""
    if not placed:
        return {}
    top = max(placed.values())
    floor = max(min(placed.values()), top - CATCH_UP_MAX)
    return {worker: max(count, floor) - floor for worker, count in placed.items()}


def placed_for_newcomer(placed: dict[int, int]) -> int:
    """A joining worker's count: level with the most placed, so it has no credit to make up. Being
    empty is load, and load already sends it the new connections until it holds its share."""
    return max(placed.values(), default=0)


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
