"""What becomes of a connection a dead worker had been handed: a pure decision, unit-tested.

The kernel's counters (tcp_state.progress) say how far the worker got. A connection it never
started is passed on as it is. One it was serving is passed on only when its request is
still whole (BEGUN: the worker peeked and wrote nothing), the worker was killed from
outside (`retry`), and this client's request has not been retried once already. One it had
answered is simply closed; anything else is closed gently, since an answer may still be on
its way to the client.
"""
from __future__ import annotations

from .tcp_state import BEGUN, ENDED, UNREAD

PASS_ON, RETRY, CLOSE, CLOSE_GENTLY = "pass-on", "retry", "close", "close-gently"


def fate(progress: str, *, retry: bool, retried_before: bool) -> str:
    """PASS_ON, RETRY, CLOSE or CLOSE_GENTLY for one held connection of a dead worker."""
    if progress == UNREAD:
        return PASS_ON
    if progress == BEGUN and retry and not retried_before:
        return RETRY
    if progress == ENDED:
        return CLOSE
    return CLOSE_GENTLY
