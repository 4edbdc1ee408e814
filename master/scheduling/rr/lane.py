"""The primary's two ends of one worker's handoff lane (wire format: master/core/lane.py).

Why a lane of its own rather than the IPC channel, and no acknowledgements:
- The primary keeps the worker's end open, so whatever the worker has not read yet stays
  in the kernel's queue even after the worker dies; the primary reads it back then and
  hands those connections to another worker.
- "How many connections has this worker not read yet?" is one FIONREAD on that same end.
  Per connection the primary does accept, one share of a sendmsg, and close.
- Only when every worker is behind does the primary need to hear when one catches up: it
  then sends a PING record, and the worker answers PONG once it has read up to it.
"""
from __future__ import annotations

import socket

from ...core.lane import LINE, PING, Conn, receive_all, send, unread_bytes


class Lane:
    """The primary's two ends of one worker's lane."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.theirs.setblocking(False)
        self.unread = 0  # connections the worker has not read: exact after refresh(), else at most
        self.pinged = False  # a PING is on its way and no PONG has come back yet
        # For telling a stalled worker (placement.stalled): since when something has waited
        # unread, and when the worker last got anything done.
        self.unread_since: float | None = None
        self.progress_seen = -1
        self.progress_at = 0.0
        self.heartbeats_seen = 0

    def refresh(self) -> int:
        """Ask the kernel how many connections the worker has not read yet."""
        self.unread = unread_bytes(self.theirs.fileno()) // LINE
        if not self.unread:
            self.unread_since = None
        return self.unread

    def send(self, conns: list[Conn], now: float = 0.0) -> None:
        """Hand `conns` over; BlockingIOError (queue full) leaves them with the caller."""
        send(self.ours, conns)
        if not self.unread or self.unread_since is None:
            self.unread_since = now
        self.unread += len(conns)

    def ping(self) -> None:
        """Ask the worker to say when it has read everything sent so far (once at a time)."""
        if not self.pinged:
            try:
                self.ours.send(PING)
                self.pinged = True
            except OSError:
                pass  # queue full: the next distribute asks again

    def returned(self) -> tuple[list[Conn], list[Conn], bool]:
        """What the worker wrote back: connections it refused (draining), idle ones it gave up
        for balance, and whether it answered our PING."""
        refused, idle, pong = receive_all(self.ours)
        if pong:
            self.pinged = False
            self.unread = 0  # nothing is sent to a pinged lane, so it has read everything
        return refused, idle, pong

    def unclaimed(self) -> list[Conn]:
        """Take back what the worker has not read yet. Each record goes to one reader only, so
        this is safe even while the worker lives (a stalled one): it just finds fewer."""
        conns = receive_all(self.theirs)[0]
        self.unread = 0
        if self.pinged:
            # Our PING may have been among what was taken back, and then no PONG ever comes
            # and the lane gets nothing again: ask anew (a second PONG is harmless).
            self.pinged = False
            self.ping()
        return conns

    def close(self) -> None:
        """Close both ends (the caller has taken every connection out first)."""
        self.ours.close()
        self.theirs.close()
