"""Scheduling policies: how connections reach workers. Chosen once, by make_handle()."""
from __future__ import annotations

from typing import Any

from .base import Handle, ListenError, bind_socket
from .reuseport import ReusePortHandle
from .round_robin import RoundRobinHandle
from .shared import SharedHandle

SCHED_RR = "rr"
SCHED_NONE = "shared"
SCHED_REUSEPORT = "reuseport"
POLICIES = {SCHED_RR: RoundRobinHandle, SCHED_NONE: SharedHandle, SCHED_REUSEPORT: ReusePortHandle}
ALIASES = {"none": SCHED_NONE, "round-robin": SCHED_RR, "roundrobin": SCHED_RR}


def normalize_policy(name: Any) -> str:
    """Return the canonical policy name, or raise ValueError listing the valid ones."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in POLICIES:
        raise ValueError(f"unknown scheduling policy {name!r}: expected one of {', '.join(POLICIES)}")
    return key


def make_handle(policy: str, host: str, port: int, loop: Any, **kwargs: Any) -> Handle:
    """Open the listening handle for `policy` on host:port (raises ListenError)."""
    return POLICIES[normalize_policy(policy)](host, port, loop, **kwargs)


__all__ = ["Handle", "ListenError", "bind_socket", "make_handle", "normalize_policy", "POLICIES",
           "SCHED_RR", "SCHED_NONE", "SCHED_REUSEPORT"]
