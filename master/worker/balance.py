"""How a worker takes part in balancing load: a verdict at each keep-alive request boundary.

The primary asks a worker to give up connections by raising SHED_ASKED on its load board
(master/scheduling/rebalance.py). Every engine asks `at_boundary()` before it writes the head
of a response on a connection it would keep open, and acts on the answer:

- KEEP: keep the connection, as usual.
- CLOSE: say `Connection: close` on this response and close after it, so the client
  reconnects and its next connection is placed afresh (works under every policy).
- HAND_BACK: keep the header as it is; once the response is fully sent, if the engine holds
  no bytes of a next request, give the idle connection to `hand_back(sock, peer)` and, if that
  returns True, let go of it without shutting it down (RetryableSocket.release()): under rr the
  primary watches it and gives its next request to the least busy worker. If bytes are
  buffered, or hand_back() returns False, the engine keeps serving it. An engine that cannot
  give connections back treats HAND_BACK as CLOSE.

An engine that can also gives back any keep-alive connection idle for longer than
`park_after` seconds (None: never), so that a client that pauses between requests has its
next one served by whichever worker is least busy then.

While the worker drains, an engine that can gives back every keep-alive connection once its
response is sent (and an idle one after park_after, as always), for as long as
`takes_back_while_draining()` says the primary takes them (rr, its listener open: a rolling
restart or a scale-down). Its clients then go on with the other workers on the connection they
have, and no idle one is closed under a client that is just sending its next request. Otherwise
(shared, reuseport, a shutdown) draining closes them.

The decisions live here, not in the engines, so an engine can change under them.
"""
from __future__ import annotations

from typing import Any

from ..core import board as fields

KEEP, CLOSE, HAND_BACK = "keep", "close", "hand-back"
PARK_AFTER = 0.1  # seconds idle before a keep-alive connection is parked in the primary (rr)


class Balancer:
    """This worker's side of load balancing."""

    def __init__(self, board: Any) -> None:
        self.cells = board.cells
        self.lane: Any = None  # the worker's LaneReader, under rr: hand-backs go up it

    @property
    def park_after(self) -> float | None:
        """Seconds after which an idle keep-alive connection goes back to the primary (None: never)."""
        return PARK_AFTER if self.lane is not None else None

    def at_boundary(self) -> str:
        """KEEP, CLOSE or HAND_BACK for the connection whose response is about to be written."""
        cells = self.cells
        if cells[fields.SHED_DONE] >= cells[fields.SHED_ASKED]:
            return KEEP
        cells[fields.SHED_DONE] += 1
        return HAND_BACK if self.lane is not None else CLOSE

    def takes_back_while_draining(self) -> bool:
        """Whether the primary takes idle keep-alive connections back from this worker as it drains."""
        return self.lane is not None and self.cells[fields.TAKES_BACK] == 1

    def hand_back(self, sock: Any, peer: Any) -> bool:
        """Give an idle connection back to the primary; False if it cannot take it (keep serving it)."""
        return self.lane is not None and self.lane.give_back(sock.fileno(), peer)
