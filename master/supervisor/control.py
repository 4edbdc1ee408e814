"""The control socket's server (a Unix socket, mode 0600); its client is `pycluster ctl` (ctl.py).

One request per connection, one JSON line each way: {"cmd": "scale", "workers": 4} ->
{"ok": true, ...}. The server runs in the master's loop and calls Arbiter.command(), the
same path the signals take, which validates every argument (commands.py).

Where the socket may live, and what happens when its path is taken, is socket_path.py's
job: start() raises ControlSocketError and the master refuses to start. Nothing a client
does can stall the loop: reads and writes are non-blocking, a request must arrive within
EXCHANGE_TIMEOUT, at most MAX_CONNECTIONS are open at once (the rest wait in the
kernel's backlog), and no callback lets an exception reach the loop.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any

from .commands import MAX_REQUEST_BYTES, CommandError, decode_request
from .socket_path import bind_private, default_control_socket, peer_credentials

log = logging.getLogger("master.control")

DISABLED = ("none", "off")  # --control-socket none: run without one
MAX_CONNECTIONS = 16
EXCHANGE_TIMEOUT = 5.0  # a whole exchange: a half-written request line is dropped after this
ACCEPT_RETRY = 0.5  # seconds to wait after EMFILE before accepting again


class _Exchange:
    """One client connection: the request bytes so far, then the reply left to send."""

    __slots__ = ("sock", "received", "out", "timer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()
        self.out = b""
        self.timer: Any = None


class ControlServer:
    """Serves control requests for one arbiter."""

    def __init__(self, path: str, arbiter: Any) -> None:
        self.configured_path = path
        self.path = path
        self.arbiter = arbiter
        self.sock: socket.socket | None = None
        self.exchanges: dict[int, _Exchange] = {}
        self._accepting = False

    def start(self) -> None:
        """Bind the socket (owner-only) and serve it from the arbiter's loop; ControlSocketError if unsafe."""
        if self.configured_path.strip().lower() in DISABLED:
            log.info("Control socket disabled (--control-socket %s)", self.configured_path)
            return
        port = self.arbiter.handle.port if self.arbiter.handle else 0
        host = self.arbiter.cfg.bind.rpartition(":")[0]
        self.path = self.configured_path or default_control_socket(f"{host}:{port}")
        self.sock = bind_private(self.path, private_dir_default=not self.configured_path)
        self.sock.setblocking(False)
        self._set_accepting(True)
        log.info("Control socket at %s", self.path)

    # -- accepting ------------------------------------------------------------------------
    def _set_accepting(self, wanted: bool) -> None:
        if self.sock is None or wanted == self._accepting:
            return
        self._accepting = wanted
        if wanted:
            self.arbiter.loop.add_reader(self.sock.fileno(), self._on_accept)
        else:
            self.arbiter.loop.remove_reader(self.sock.fileno())

    def _on_accept(self) -> None:
        while self.sock is not None and len(self.exchanges) < MAX_CONNECTIONS:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # EMFILE/ENFILE: the listener stays readable, so pause, never spin
                log.warning("control socket: cannot accept (%s); retrying in %.1f s", exc.strerror, ACCEPT_RETRY)
                self._set_accepting(False)
                self.arbiter.loop.call_later(ACCEPT_RETRY, self._resume)
                return
            self._admit(conn)
        self._set_accepting(len(self.exchanges) < MAX_CONNECTIONS)

    def _resume(self) -> None:
        self._set_accepting(len(self.exchanges) < MAX_CONNECTIONS)

    def _admit(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        fd = conn.fileno()
        exchange = _Exchange(conn)
        self.exchanges[fd] = exchange
        exchange.timer = self.arbiter.loop.call_later(EXCHANGE_TIMEOUT, self._timed_out, fd, exchange)
        if not _peer_allowed(conn):
            self._reply(fd, {"ok": False, "error": "permission denied: not the master's user"})
            return
        self.arbiter.loop.add_reader(fd, lambda: self._on_readable(fd))

    # -- one exchange -----------------------------------------------------------------------
    def _on_readable(self, fd: int) -> None:
        exchange = self.exchanges.get(fd)
        if exchange is None:
            return
        try:
            chunk = exchange.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        exchange.received += chunk
        if chunk and b"\n" not in exchange.received and len(exchange.received) <= MAX_REQUEST_BYTES:
            return
        if not chunk and not exchange.received:
            self._finish(fd)  # connected and left without asking anything
            return
        self._reply(fd, self.handle_request(bytes(exchange.received).split(b"\n", 1)[0]))

    def handle_request(self, line: bytes) -> dict[str, Any]:
        """Decode one request and run it through the arbiter's command path; never raises."""
        try:
            name, args = decode_request(line)
            return self.arbiter.command(name, **args)
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the control boundary: the loop must go on
            log.exception("control request failed")
            return {"ok": False, "error": f"request failed: {type(exc).__name__}"}

    def _reply(self, fd: int, reply: dict[str, Any]) -> None:
        exchange = self.exchanges[fd]
        try:
            exchange.out = json.dumps(reply, default=str).encode() + b"\n"
        except (TypeError, ValueError, RecursionError):
            exchange.out = b'{"ok": false, "error": "the reply could not be encoded"}\n'
        self.arbiter.loop.remove_reader(fd)
        self._on_writable(fd)

    def _on_writable(self, fd: int) -> None:
        exchange = self.exchanges.get(fd)
        if exchange is None:
            return
        try:
            sent = exchange.sock.send(exchange.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._finish(fd)
            return
        exchange.out = exchange.out[sent:]
        if exchange.out:  # a client that does not read: wait for room, up to the exchange's timeout
            self.arbiter.loop.add_writer(fd, lambda: self._on_writable(fd))
        else:
            self._finish(fd)

    def _timed_out(self, fd: int, exchange: _Exchange) -> None:
        if self.exchanges.get(fd) is exchange:
            self._finish(fd)

    def _finish(self, fd: int) -> None:
        exchange = self.exchanges.pop(fd, None)
        if exchange is None:
            return
        self.arbiter.loop.remove_reader(fd)
        self.arbiter.loop.remove_writer(fd)
        exchange.timer.cancel()
        exchange.sock.close()
        self._set_accepting(True)

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        for fd in list(self.exchanges):
            self._finish(fd)
        if self.sock is not None:
            self._set_accepting(False)
            self.sock.close()
            self.sock = None
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _peer_allowed(conn: socket.socket) -> bool:
    # The 0600 mode already stops other users; the peer's uid is checked as well, so a
    # socket exposed by mistake (a bind mount, a chmod) still refuses them.
    try:
        _pid, uid, _gid = peer_credentials(conn)
    except OSError:
        return False
    return uid in (os.getuid(), 0)
