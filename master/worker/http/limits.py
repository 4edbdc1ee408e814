"""The transport limits one engine enforces, read once from WorkerSettings (0 turns one off)."""
from __future__ import annotations

from dataclasses import dataclass

from ...core.settings import WorkerSettings

UNLIMITED = 1 << 62  # a size limit that is off
DISCARD_MAX = 64 * 1024  # an unread request body up to this is read and dropped to keep the connection


@dataclass(frozen=True)
class Limits:
    """What one connection may send, and how long it may take."""

    request_line: int = 8190
    header_fields: int = 100
    header_bytes: int = 64 * 1024
    body_bytes: int = 100 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keepalive_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> "Limits":
        """The limits the master passed down."""
        return cls(request_line=settings.limit_request_line or UNLIMITED,
                   header_fields=settings.limit_request_fields or UNLIMITED,
                   header_bytes=settings.max_header_bytes or UNLIMITED,
                   body_bytes=settings.max_body_bytes or UNLIMITED,
                   header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
                   keepalive_timeout=settings.keepalive_timeout)

    def shortest_timeout(self) -> float:
        """The shortest timeout that is on (0 when none is): the sweep runs a few times per it."""
        on = [t for t in (self.header_timeout, self.body_timeout, self.keepalive_timeout) if t > 0]
        return min(on) if on else 0.0
