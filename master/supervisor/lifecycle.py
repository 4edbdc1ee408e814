"""What a worker's exit means, as a pure function of the facts: the supervisor acts on the verdict.

Kept apart from the arbiter so every case is unit-tested without processes
(tests/unit/test_lifecycle.py), and so the arbiter's exit handler is a table lookup.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.exitcodes import WORKER_APP_LOAD_ERROR, WORKER_LISTEN_ERROR

# The verdicts, in the order classify_exit() tests for them.
SHUTTING_DOWN = "shutting-down"  # the master is stopping: note the exit, finish once the last is gone
DRAINED = "drained"  # we retired it (scale-down, recycle, reload) and it left: reconcile
SUCCESSOR_FAILED = "successor-failed"  # a replacement died before listening: the old worker keeps serving
APP_LOAD_HALT = "app-load-halt"  # cannot load the app and no worker ever listened: halt, status 4
APP_LOAD_SLOT_DOWN = "app-load-slot-down"  # cannot load the app, others serve: leave the slot empty
LISTEN_HALT = "listen-halt"  # cannot listen where the master said: halt, status 3
SUCCESSOR_TAKES_OVER = "successor-takes-over"  # crashed while its replacement was booting
RESPAWN = "respawn"  # a crash or a timeout: start a new worker in its slot (with backoff)


@dataclass(frozen=True)
class ExitFacts:
    """What the supervisor knows about a worker when it exits."""

    code: int | None  # exit status, or None when a signal ended it
    signame: str | None  # the signal that ended it, e.g. "SIGKILL"
    supervisor_stopping: bool  # the master is shutting down
    retired: bool  # we told it to drain (retire_reason set, and it knew it was leaving)
    was_successor: bool  # it was started to replace a live worker
    ever_listened: bool  # it reached the listening state at least once
    successor_alive: bool  # a replacement of it is still booting or serving
    cluster_ever_listened: bool  # some worker of this master has ever listened
    kill_reason: str | None = None  # we killed it for its own fault, e.g. "timeout"


def classify_exit(facts: ExitFacts) -> tuple[str, str]:
    """(verdict, reason): what to do about this exit, and the reason to count a restart under."""
    if facts.supervisor_stopping:
        return SHUTTING_DOWN, "stop"
    if facts.retired:
        return DRAINED, "retired"
    if facts.was_successor and not facts.ever_listened:
        return SUCCESSOR_FAILED, "boot-failure"
    if facts.code == WORKER_APP_LOAD_ERROR:
        return (APP_LOAD_SLOT_DOWN if facts.cluster_ever_listened else APP_LOAD_HALT), "boot-failure"
    if facts.code == WORKER_LISTEN_ERROR:
        return LISTEN_HALT, "boot-failure"
    if facts.successor_alive:
        return SUCCESSOR_TAKES_OVER, "crash"
    return RESPAWN, facts.kill_reason or "crash"


def describe_exit(code: int | None, signame: str | None) -> str:
    """'SIGKILL' or 'exit code 3'."""
    return signame if signame else f"exit code {code}"
