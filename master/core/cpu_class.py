"""The master's CPU scheduling class: SCHED_BATCH, so it hands connections over in batches.

Under `rr` the master accepts every connection and hands it to a worker. In the normal class
the kernel wakes it for nearly every new connection on a busy machine, preempting a worker
(or the load generator) to hand over one or two. As SCHED_BATCH a woken master does not
preempt: it runs when the running task's slice ends, finds several connections queued, and
hands them over in one pass. While it waits, the workers serve what they already have; with
a core free the master still runs at once. Measurements: docs/BENCHMARKS.md.

SCHED_BATCH is inherited over fork, even with SCHED_RESET_ON_FORK (that flag only resets
real-time classes), so the master tells each child, in WORKER_CLASS_ENV, which class to
go back to (`restore_in_child`): workers serve requests and keep the class they had.
"""
from __future__ import annotations

import os

WORKER_CLASS_ENV = "PYCLUSTER_WORKER_SCHED"


def use_batch() -> tuple[dict[str, str], str]:
    """Make this process (threads started from now on too) SCHED_BATCH.

    Returns the environment for children and a one-line account for the log. Leaves
    real-time and SCHED_IDLE classes alone: whoever chose those meant them.
    """
    if not hasattr(os, "SCHED_BATCH"):
        return {}, "stays in its CPU class: SCHED_BATCH is Linux-only"
    try:
        before = os.sched_getscheduler(0)
        if before == os.SCHED_BATCH:
            return {}, "was already SCHED_BATCH, and so are its workers"
        if before != os.SCHED_OTHER:
            return {}, f"stays in CPU scheduling class {_name(before)}, as it was started (and so do its workers)"
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:  # a seccomp profile or an old kernel may refuse
        return {}, f"stays in its CPU class: SCHED_BATCH refused ({exc.strerror or exc})"
    return {WORKER_CLASS_ENV: str(before)}, "runs as SCHED_BATCH (its workers do not): it hands connections over in batches"


def _name(policy: int) -> str:
    for name in ("SCHED_IDLE", "SCHED_FIFO", "SCHED_RR", "SCHED_DEADLINE"):
        if getattr(os, name, None) == policy:
            return name
    return str(policy)


def restore_in_child() -> None:
    """In a worker: go back to the class the master had before use_batch()."""
    wanted = os.environ.pop(WORKER_CLASS_ENV, None)
    if wanted is None or not hasattr(os, "sched_setscheduler"):
        return
    try:
        os.sched_setscheduler(0, int(wanted), os.sched_param(0))
    except (OSError, ValueError):
        pass  # stay as inherited: slower to wake under load, but correct
