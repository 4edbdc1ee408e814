"""What the master tells each worker about how to serve: one record, parsed once in the master.

The supervisor builds a WorkerSettings from its validated configuration and passes it down
in one environment variable as JSON; the worker reads it back as it is, never re-parsing a
flag by rules of its own. A worker started by the cluster API alone (no supervisor) gets
the defaults.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

ENV = "PYCLUSTER_WORKER_SETTINGS"


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker serves."""

    access_log: bool = False  # a log line per request
    heartbeat_interval: float = 1.0  # seconds between heartbeats to the primary

    def to_env(self) -> dict[str, str]:
        """The environment entry that carries these settings to a worker."""
        return {ENV: json.dumps(dataclasses.asdict(self), separators=(",", ":"))}

    @classmethod
    def from_env(cls, environ: Any = None) -> "WorkerSettings":
        """The settings the master passed down (defaults when it passed none)."""
        text = (os.environ if environ is None else environ).get(ENV)
        if not text:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})
