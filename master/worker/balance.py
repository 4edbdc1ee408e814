"""How a worker takes part in balancing load: a verdict at each keep-alive request boundary.

Every engine asks `at_boundary()` before it writes the head of a response on a connection it
would keep open, and acts on the answer:

- KEEP: keep the connection, as usual.
- CLOSE: say `Connection: close` on this response and close after it, so the client
  reconnects and its next connection is placed afresh (works under every policy).
- HAND_BACK: keep the header as it is; once the response is fully sent, if the engine holds
  no bytes of a next request, give the idle connection to `hand_back(sock)` and forget it
  without shutting it down: under rr the primary watches it and gives its next request to
  the least-loaded worker. (If bytes are buffered, the engine keeps serving it.)

The decisions themselves live here, not in the engines, so an engine can change under them.
"""
from __future__ import annotations

from typing import Any

KEEP, CLOSE, HAND_BACK = "keep", "close", "hand-back"


class Balancer:
    """This worker's side of load balancing (until the primary asks for more, it keeps everything)."""

    def at_boundary(self) -> str:
        """KEEP, CLOSE or HAND_BACK for the connection whose response is about to be written."""
        return KEEP

    def hand_back(self, sock: Any) -> bool:
        """Give an idle connection back to the primary; False if it cannot take it (keep serving it)."""
        return False
