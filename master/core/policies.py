"""The names of the scheduling policies. Both sides need them; only the primary has their handles."""
from __future__ import annotations

from typing import Any

SCHED_RR = "rr"
SCHED_NONE = "shared"
SCHED_REUSEPORT = "reuseport"
POLICY_NAMES = (SCHED_RR, SCHED_NONE, SCHED_REUSEPORT)
ALIASES = {"none": SCHED_NONE, "round-robin": SCHED_RR, "roundrobin": SCHED_RR}


def normalize_policy(name: Any) -> str:
    """Return the canonical policy name, or raise ValueError listing the valid ones."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in POLICY_NAMES:
        raise ValueError(f"unknown scheduling policy {name!r}: expected one of {', '.join(POLICY_NAMES)}")
    return key
