"""A real master per engine (rr, 2 workers) serving tests/conformance/echo_app.py with short limits.

`pywsgi_gap()` marks a case pywsgi is known to fail as xfail(strict=True): the day pywsgi gains
the behaviour the case turns into a failure, and the mark must go (docs/HTTP.md lists the gaps).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from support import Master, wait_for

ENGINES = ("pywsgi", "httptools")
HEADER_TIMEOUT = BODY_TIMEOUT = KEEPALIVE_TIMEOUT = 1.0
MAX_BODY = 100_000
LIMITS = ("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
          "--keepalive-timeout", str(KEEPALIVE_TIMEOUT), "--max-body-bytes", str(MAX_BODY))


def start_master(tmp: Path, engine: str, *extra: str, workers: int = 2) -> Master:
    """A master with `engine`, the suite's limits and `extra` flags, listening."""
    master = Master(tmp, "conformance.echo_app:app", workers, "--engine", engine, *LIMITS, *extra)
    master.start()
    try:
        master.wait_ready(workers)
    except BaseException:
        master.kill_all()
        raise
    return master


@dataclass
class Served:
    """One engine under test."""

    engine: str
    master: Master

    @property
    def port(self) -> int:
        return self.master.port


@pytest.fixture(scope="module", params=ENGINES)
def served(request, tmp_path_factory):
    master = start_master(tmp_path_factory.mktemp(request.param), request.param)
    try:
        yield Served(request.param, master)
    finally:
        master.kill_all()


@pytest.fixture
def pywsgi_gap(request, served):
    """Call with a reason to mark this case as a known pywsgi gap (xfail, strict) on pywsgi only."""
    def mark(reason: str) -> None:
        if served.engine == "pywsgi":
            request.applymarker(pytest.mark.xfail(strict=True, reason=f"pywsgi: {reason}"))
    return mark


__all__ = ["ENGINES", "Served", "start_master", "wait_for"]
