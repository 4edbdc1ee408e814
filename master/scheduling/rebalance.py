"""Rebalancing keep-alive connections: when one worker holds more than its share, it gives some up.

Keep-alive clients stay on the worker they first reached. After a crash, a start-up or a
scale-up, the newcomer would idle while the others carry every connection. Every TICK the
primary compares the keep-alive connections each listening worker holds (KEPT on the load
boards; connections that serve one request and close are placed as they come, and counting
them would only add noise) and, once an imbalance has lasted two ticks, asks the heaviest to
give up their excess at their next request boundaries (SHED_ASKED on the board). A worker
under rr hands the idle connection back down its lane, and the primary places its next
request, never back on a worker over its share (placement.place_request); under shared or
reuseport it answers that request with `Connection: close`, and the client reconnects
wherever the kernel sends it.
No request in flight is ever cut: a connection is only given up between two requests.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from ..core import board as fields

TICK = 0.2  # seconds between looks at the boards
MIN_GAP = 2  # act when the fullest and the emptiest worker differ by at least this many connections


def shed_plan(connections: dict[int, int], outstanding: dict[int, int]) -> dict[int, int]:
    """How many connections each worker should be giving up, in all (outstanding asks included).

    `connections`: worker id -> connections it holds; `outstanding`: what it was asked to give
    up and has not yet. Returns worker id -> the new total of outstanding asks (0 cancels them).
    """
    if len(connections) < 2:
        return {w: 0 for w in connections}
    counts = connections.values()
    if max(counts) - min(counts) < MIN_GAP:
        return {w: 0 for w in connections}
    share = math.ceil(sum(counts) / len(connections))
    return {w: max(0, held - share) for w, held in connections.items()}


class Rebalancer:
    """Applies shed_plan() to the boards of the workers `listening()` returns, every TICK."""

    def __init__(self, loop: Any, listening: Callable[[], list[Any]]) -> None:
        self.loop = loop
        self.listening = listening
        self.suspect: set[int] = set()  # workers over their share at the last tick
        self.started = False

    def start(self) -> None:
        """Begin looking (idempotent)."""
        if not self.started:
            self.started = True
            self.loop.call_later(TICK, self.tick, ref=False)

    def tick(self) -> None:
        """One look at the boards; ask, confirm or cancel."""
        workers = [w for w in self.listening() if w.board is not None]
        boards = {w.id: w.board for w in workers}
        outstanding = {i: max(0, b[fields.SHED_ASKED] - b[fields.SHED_DONE]) for i, b in boards.items()}
        plan = shed_plan({i: b[fields.KEPT] for i, b in boards.items()}, outstanding)
        over = {i for i, want in plan.items() if want}
        for worker_id, want in plan.items():
            board = boards[worker_id]
            if want == 0 and outstanding[worker_id]:
                board[fields.SHED_ASKED] = board[fields.SHED_DONE]  # balanced again: forget the rest
            elif want and worker_id in self.suspect and want != outstanding[worker_id]:
                board[fields.SHED_ASKED] = board[fields.SHED_DONE] + want  # an imbalance that lasted
        self.suspect = over
        self.loop.call_later(TICK, self.tick, ref=False)
