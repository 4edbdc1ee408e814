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
from .exchanges import ExchangeServer
from .socket_path import bind_private, default_control_socket, peer_credentials

log = logging.getLogger("master.control")

DISABLED = ("none", "off")  # --control-socket none: run without one
MAX_CONNECTIONS = 16
EXCHANGE_TIMEOUT = 5.0  # a whole exchange: a half-written request line is dropped after this


class ControlServer(ExchangeServer):
    """Serves control requests for one arbiter."""

    name = "control socket"

    def __init__(self, path: str, arbiter: Any) -> None:
        super().__init__(arbiter.loop, MAX_CONNECTIONS, EXCHANGE_TIMEOUT)
        self.configured_path = path
        self.path = path
        self.arbiter = arbiter

    def start(self) -> None:
        """Bind the socket (owner-only) and serve it from the arbiter's loop; ControlSocketError if unsafe."""
        if self.configured_path.strip().lower() in DISABLED:
            log.info("Control socket disabled (--control-socket %s)", self.configured_path)
            return
        port = self.arbiter.handle.port if self.arbiter.handle else 0
        host = self.arbiter.cfg.bind.rpartition(":")[0]
        self.path = self.configured_path or default_control_socket(f"{host}:{port}")
        self.serve(bind_private(self.path, private_dir_default=not self.configured_path))
        log.info("Control socket at %s", self.path)

    # -- one exchange -----------------------------------------------------------------------
    def new_state(self, conn: socket.socket) -> bytearray:
        return bytearray()  # the request line so far

    def refusal(self, conn: socket.socket) -> bytes | None:
        if _peer_allowed(conn):
            return None
        return _encode({"ok": False, "error": "permission denied: not the master's user"})

    def on_data(self, received: bytearray, data: bytes) -> bytes | None:
        received += data
        if data and b"\n" not in received and len(received) <= MAX_REQUEST_BYTES:
            return None
        if not data and not received:
            return b""  # connected and left without asking anything
        return _encode(self.handle_request(bytes(received).split(b"\n", 1)[0]))

    def handle_request(self, line: bytes) -> dict[str, Any]:
        """Decode one request and run it through the arbiter's command path; never raises."""
        try:
            name, args = decode_request(line)
            return self.arbiter.command(name, **args)
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control request failed")
            return {"ok": False, "error": f"request failed: {type(exc).__name__}"}

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        serving = self.sock is not None
        super().close()
        if serving:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _encode(reply: dict[str, Any]) -> bytes:
    try:
        return json.dumps(reply, default=str).encode() + b"\n"
    except (TypeError, ValueError, RecursionError):
        return b'{"ok": false, "error": "the reply could not be encoded"}\n'


def _peer_allowed(conn: socket.socket) -> bool:
    # The 0600 mode already stops other users; the peer's uid is checked as well, so a
    # socket exposed by mistake (a bind mount, a chmod) still refuses them.
    try:
        _pid, uid, _gid = peer_credentials(conn)
    except OSError:
        return False
    return uid in (os.getuid(), 0)
