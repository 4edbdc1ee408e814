"""Scheduling policies: how connections reach workers. Chosen once, by make_handle()."""
from __future__ import annotations

from typing import Any

from ..core.net import ListenError
from ..core.policies import SCHED_NONE, SCHED_REUSEPORT, SCHED_RR, normalize_policy
from .base import Handle
from .reuseport import ReusePortHandle
from .rr import RoundRobinHandle
from .shared import SharedHandle

HANDLES: dict[str, type[Handle]] = {SCHED_RR: RoundRobinHandle, SCHED_NONE: SharedHandle,
                                    SCHED_REUSEPORT: ReusePortHandle}


def make_handle(policy: str, host: str, port: int, loop: Any, **kwargs: Any) -> Handle:
    """Open the listening handle for `policy` on host:port (raises ListenError)."""
    return HANDLES[normalize_policy(policy)](host, port, loop, **kwargs)


__all__ = ["Handle", "ListenError", "make_handle", "normalize_policy", "SCHED_RR", "SCHED_NONE",
           "SCHED_REUSEPORT"]
