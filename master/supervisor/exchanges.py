"""One request and one reply per connection, served from the master's loop with every cost bounded.

The control socket and the HTTP endpoint (METRICS_BIND) are both this shape; they differ only
in how a request is read and answered (`on_data`). What is bounded here, for both:
- at most `max_connections` open at once; past that, new ones wait in the kernel's backlog;
- a whole exchange within `timeout` seconds (a half-sent request, a reader that never reads);
- reads and writes never block the loop;
- out of descriptors (EMFILE), accepting pauses instead of spinning on a readable listener;
- no callback lets an exception reach the loop.
"""
from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger("master.exchanges")

ACCEPT_RETRY = 0.5  # seconds to wait after EMFILE before accepting again


class Exchange:
    """One connection: what the subclass keeps while reading (`state`), then the reply left to send."""

    __slots__ = ("out", "sock", "state", "timer")

    def __init__(self, sock: socket.socket, state: Any) -> None:
        self.sock = sock
        self.state = state
        self.out = b""
        self.timer: Any = None


class ExchangeServer:
    """Accepts on a listening socket; subclasses say what a connection keeps and how data is answered."""

    name = "endpoint"  # for log lines

    def __init__(self, loop: Any, max_connections: int, timeout: float) -> None:
        self.loop = loop
        self.max_connections = max_connections
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.exchanges: dict[int, Exchange] = {}
        self._accepting = False

    # -- what subclasses decide -------------------------------------------------------------
    def new_state(self, conn: socket.socket) -> Any:
        """What an exchange keeps while its request arrives."""
        return None

    def refusal(self, conn: socket.socket) -> bytes | None:
        """A reply to send at once instead of reading a request (e.g. to a peer not allowed), or None."""
        return None

    def on_data(self, state: Any, data: bytes) -> bytes | None:
        """The reply once `data` (b"" at end of file) completes a request; None to read on."""
        raise NotImplementedError

    # -- serving --------------------------------------------------------------------------
    def serve(self, sock: socket.socket) -> None:
        """Start accepting on a bound, listening socket."""
        self.sock = sock
        sock.setblocking(False)
        self._set_accepting(True)

    def _set_accepting(self, wanted: bool) -> None:
        if self.sock is None or wanted == self._accepting:
            return
        self._accepting = wanted
        if wanted:
            self.loop.add_reader(self.sock.fileno(), self._on_accept)
        else:
            self.loop.remove_reader(self.sock.fileno())

    def _on_accept(self) -> None:
        while self.sock is not None and len(self.exchanges) < self.max_connections:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                break
            except OSError as exc:  # EMFILE, ENFILE: the listener stays readable, so pause rather than spin
                log.warning("%s: cannot accept (%s); retrying in %.1f s", self.name, exc.strerror, ACCEPT_RETRY)
                self._set_accepting(False)
                self.loop.call_later(ACCEPT_RETRY, self._resume)
                return
            self._admit(conn)
        self._set_accepting(len(self.exchanges) < self.max_connections)

    def _resume(self) -> None:
        self._set_accepting(len(self.exchanges) < self.max_connections)

    def _admit(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        fd = conn.fileno()
        exchange = Exchange(conn, self.new_state(conn))
        self.exchanges[fd] = exchange
        exchange.timer = self.loop.call_later(self.timeout, self._timed_out, fd, exchange)
        refusal = self.refusal(conn)
        if refusal is not None:
            self._send(fd, refusal)
        else:
            self.loop.add_reader(fd, lambda: self._on_readable(fd))

    def _on_readable(self, fd: int) -> None:
        exchange = self.exchanges.get(fd)
        if exchange is None:
            return
        try:
            data = exchange.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            reply = self.on_data(exchange.state, data)
        except Exception:
            log.exception("%s: request failed", self.name)
            reply = b""
        if reply is not None:
            self._send(fd, reply)
        elif not data:
            self._finish(fd)

    def _send(self, fd: int, reply: bytes) -> None:
        self.exchanges[fd].out = reply
        self.loop.remove_reader(fd)
        self._on_writable(fd)

    def _on_writable(self, fd: int) -> None:
        exchange = self.exchanges.get(fd)
        if exchange is None:
            return
        try:
            sent = exchange.sock.send(exchange.out) if exchange.out else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._finish(fd)
            return
        exchange.out = exchange.out[sent:]
        if exchange.out:  # a client that does not read: wait for room, up to the exchange's timeout
            self.loop.add_writer(fd, lambda: self._on_writable(fd))
        else:
            self._finish(fd)

    def _timed_out(self, fd: int, exchange: Exchange) -> None:
        if self.exchanges.get(fd) is exchange:
            self._finish(fd)

    def _finish(self, fd: int) -> None:
        exchange = self.exchanges.pop(fd, None)
        if exchange is None:
            return
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)
        exchange.timer.cancel()
        exchange.sock.close()
        self._set_accepting(True)

    def close(self) -> None:
        """Drop every open exchange and stop listening."""
        for fd in list(self.exchanges):
            self._finish(fd)
        if self.sock is not None:
            self._set_accepting(False)
            self.sock.close()
            self.sock = None
