"""The control socket's server (a Unix socket, mode 0600); its client is `pycluster ctl` (ctl.py).

One request per connection, one JSON line each way: {"cmd": "scale", "workers": 4} ->
{"ok": true, ...}. The server runs in the master's loop and calls Arbiter.command(), the
same path the signals take, which validates every argument (commands.py).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import struct
from typing import Any

from .commands import MAX_REQUEST_BYTES, CommandError, decode_request
from .socket_path import default_control_socket

log = logging.getLogger("master.control")


class ControlServer:
    """Serves control requests for one arbiter."""

    def __init__(self, path: str, arbiter: Any) -> None:
        self.configured_path = path
        self.path = path
        self.arbiter = arbiter
        self.sock: socket.socket | None = None
        self.buffers: dict[int, tuple[socket.socket, bytearray]] = {}

    def start(self) -> None:
        """Bind the socket (owner-only) and serve it from the arbiter's loop."""
        port = self.arbiter.handle.port if self.arbiter.handle else 0
        host = self.arbiter.cfg.bind.rpartition(":")[0]
        self.path = self.configured_path or default_control_socket(f"{host}:{port}")
        if os.path.exists(self.path):
            if _answers(self.path):
                log.error("control socket %s is in use by another master: control disabled", self.path)
                return
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: no window where others could connect
        try:
            sock.bind(self.path)
        except OSError as exc:
            log.error("cannot create control socket %s: %s: control disabled", self.path, exc.strerror)
            sock.close()
            return
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock
        self.arbiter.loop.add_reader(sock.fileno(), self._on_accept)
        log.info("Control socket at %s", self.path)

    def _on_accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, OSError):
            return
        if not _peer_allowed(conn):
            _respond(conn, {"ok": False, "error": "permission denied: not the master's user"})
            conn.close()
            return
        conn.setblocking(False)
        self.buffers[conn.fileno()] = (conn, bytearray())
        self.arbiter.loop.add_reader(conn.fileno(), lambda fd=conn.fileno(): self._on_data(fd))

    def _on_data(self, fd: int) -> None:
        conn, buffer = self.buffers[fd]
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        buffer += chunk
        if chunk and b"\n" not in buffer and len(buffer) <= MAX_REQUEST_BYTES:
            return
        self.arbiter.loop.remove_reader(fd)
        del self.buffers[fd]
        _respond(conn, self.handle_request(bytes(buffer).split(b"\n", 1)[0]))
        conn.close()

    def handle_request(self, line: bytes) -> dict[str, Any]:
        """Decode one request and run it through the arbiter's command path."""
        try:
            name, args = decode_request(line)
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        return self.arbiter.command(name, **args)

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        for conn, _ in self.buffers.values():
            conn.close()
        self.buffers.clear()
        if self.sock is not None:
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
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return False
    return uid in (os.getuid(), 0)


def _respond(conn: socket.socket, reply: dict[str, Any]) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(1.0)  # a client that does not read cannot stall the master for long
        conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
    except OSError:
        pass


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


