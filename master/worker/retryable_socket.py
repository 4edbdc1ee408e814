"""A connection the primary handed over (rr), as a worker serves it: retryable until answered.

Two things differ from a connection the worker accepted itself:

- The primary keeps a copy of the latest few (master/scheduling/rr/handle.py), so closing our
  descriptor alone would not end the connection: it is shut down first, and the client
  sees the end at once.
- Until the first response is sent, an idempotent request is peeked at, not read: the
  bytes stay in the kernel's queue while the app runs, and only leave it once the first
  bytes of the answer have gone out. If this worker is SIGKILLed before that, the primary
  finds the request whole in its copy of the connection and another worker serves it
  (master/scheduling/rr/rescue.py decides when that is safe). The price is one extra
  recv per connection; a request that does not fit what is queued, or whose method is
  not idempotent (RFC 9110 9.2.2), is read the ordinary way from the start.
"""
from __future__ import annotations

import _socket
import os
import socket
from typing import Any

# Idempotent methods (RFC 9110 9.2.2): repeating one has the effect of sending it once.
IDEMPOTENT = (b"GET ", b"HEAD ", b"OPTIONS ", b"PUT ", b"DELETE ", b"TRACE ")


def _idempotent(buffer: Any, length: int) -> bool:
    return bytes(buffer[:min(length, 8)]).startswith(IDEMPOTENT)


def _shut_down(sock: Any) -> None:
    if sock.fileno() >= 0:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more


class _ShutDownOnClose(getattr(socket.socket, "_gevent_sock_class", _socket.socket)):  # type: ignore[misc]
    """The OS-level socket under a RetryableSocket: shut down before the descriptor closes.

    pywsgi ends a connection by closing this inner socket directly, so the shutdown has to
    live here (gevent builds it from its socket class's `_gevent_sock_class`).
    """

    def close(self) -> None:
        """Shut the connection down, then close the descriptor."""
        _shut_down(self)
        super().close()


class RetryableSocket(socket.socket):
    """A handed-over connection: shut down on close; its first request peeked at if asked."""

    _gevent_sock_class = _ShutDownOnClose
    _peeked: int | None = None  # bytes given to the reader while peeking; None: reading normally

    def peek_first_request(self) -> None:
        """Leave the first request in the kernel's queue until the answer starts (if idempotent)."""
        self._peeked = 0

    def no_retry(self) -> None:
        """Take a peeked request out of the queue now: from here on it is never retried.

        For a handler about to do something a second run would repeat (a GET that
        counts), reached by apps as environ["pycluster.no_retry"]() (master/worker/server.py).
        """
        if self._peeked is not None:
            self._consume_peeked()

    def close(self) -> None:
        """Shut the connection down, then close the descriptor."""
        _shut_down(self)
        super().close()

    def release(self) -> None:
        """Close our descriptor only, leaving the connection up: it was handed back to the primary."""
        fd = self.detach()
        if fd >= 0:
            os.close(fd)

    # -- reading ----------------------------------------------------------------------------
    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Read (or, while peeking, peek) into `buffer`."""
        if self._peeked is not None and not flags:
            given = self._peek_into(buffer, nbytes or len(buffer))
            if given is not None:
                return given
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Read (or, while peeking, peek) up to `bufsize` bytes."""
        if self._peeked is not None and not flags:
            buffer = bytearray(bufsize)
            given = self._peek_into(buffer, bufsize)
            if given is not None:
                return bytes(buffer[:given])
        return super().recv(bufsize, flags)

    def _peek_into(self, buffer: Any, wanted: int) -> int | None:
        """Give the reader the next queued bytes without consuming them; None: read normally."""
        offset = self._peeked or 0
        if offset == 0:  # the usual case, one read for the whole request: straight into `buffer`
            given = super().recv_into(buffer, wanted, socket.MSG_PEEK)  # waits until something is queued
            if given and _idempotent(buffer, given):
                self._peeked = given
                return given
        else:
            queued = super().recv(offset + wanted, socket.MSG_PEEK)
            if len(queued) > offset:
                chunk = queued[offset:offset + wanted]
                buffer[:len(chunk)] = chunk
                self._peeked = offset + len(chunk)
                return len(chunk)
        # Not idempotent (or not even a method yet), end of file, or the reader wants more
        # than has arrived: read it the ordinary way from here on.
        self._consume_peeked()
        return None

    def _consume_peeked(self) -> None:
        """Take what the reader already has out of the kernel's queue (it is all there)."""
        left, self._peeked = self._peeked or 0, None
        while left > 0:
            got = super().recv(left)
            if not got:
                break
            left -= len(got)

    # -- writing: once the answer is out, the request can no longer be served elsewhere -------
    # The peeked request leaves the queue only after the first send: killed before it, the
    # request is whole and nothing was answered (another worker serves it); killed after,
    # the answer is in the kernel's hands and the primary lets it reach the client.
    def send(self, data: Any, flags: int = 0, *args: Any, **kwargs: Any) -> int:
        """Send; the first send also consumes a peeked request."""
        sent = super().send(data, flags, *args, **kwargs)
        if self._peeked is not None:
            self._consume_peeked()
        return sent

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send everything; the first send also consumes a peeked request."""
        super().sendall(data, flags)
        if self._peeked is not None:
            self._consume_peeked()
