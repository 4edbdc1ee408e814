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
    engine: str = "httptools"  # the HTTP layer: "pywsgi" (gevent.pywsgi) or "httptools" (ours, on llhttp)
    # Transport limits, the same on every engine (0 turns a timeout or a cap off):
    header_timeout: float = 10.0  # seconds to receive a whole request head, from its first byte
    body_timeout: float = 10.0  # seconds a request body may stall between two reads
    keepalive_timeout: float = 5.0  # seconds an idle keep-alive connection stays open
    worker_connections: int = 1000  # connections one worker serves at once; more wait in the kernel
    max_header_bytes: int = 64 * 1024  # request line + headers; past this: 431
    limit_request_line: int = 8190  # past this: 414
    limit_request_fields: int = 100  # header fields; past this: 431
    max_body_bytes: int = 100 * 1024 * 1024  # past this: 413, and the connection closes
    time_slice: float = 0.002  # seconds of CPU a computing request keeps before the others get a turn (0: off)

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
