"""What every scheduling policy shares: binding the listening socket, one small interface."""
from __future__ import annotations

import errno
import os
import socket
from typing import Any, Callable

Reply = Callable[..., None]  # reply(fds=None, **fields) answers the worker's queryServer


class ListenError(OSError):
    """The address cannot be listened on (in use, not permitted, not resolvable)."""


def describe_bind_error(host: str, port: int, exc: OSError) -> str:
    """One clear line for a failed bind."""
    reason = {
        errno.EADDRINUSE: "address already in use (another process is listening there)",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
        errno.EADDRNOTAVAIL: "address not available on this machine",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"cannot listen on {host}:{port}: {reason}"


def bind_socket(host: str, port: int, *, reuseport: bool = False, listen: bool = True,
                backlog: int = 2048) -> socket.socket:
    """Bind (and usually listen on) a TCP socket; raise ListenError with a clear message."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(errno.EADDRNOTAVAIL, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, describe_bind_error(host, port, exc)) from None
    return sock


class Handle:
    """One listening address under one policy (Node's SharedHandle/RoundRobinHandle).

    `add(worker, reply)` admits a worker that asked to listen; `remove(worker)` takes it
    out (True when no worker is left); `close()` releases the socket. A persistent handle
    (opened by the arbiter before forking) stays open when its last worker leaves, so
    clients queue in the backlog instead of being refused while workers restart.
    """

    policy = "base"

    def __init__(self, host: str, port: int, loop: Any, *, backlog: int = 2048, persistent: bool = False) -> None:
        self.host = host
        self.loop = loop
        self.backlog = backlog
        self.persistent = persistent
        self.workers: dict[int, Any] = {}
        self.sock = self.open(host, port)
        self.port = self.sock.getsockname()[1]

    def open(self, host: str, port: int) -> socket.socket:
        """Create this policy's socket."""
        return bind_socket(host, port, backlog=self.backlog)

    def add(self, worker: Any, reply: Reply) -> None:
        """Admit `worker`; answer its queryServer through `reply`."""
        self.workers[worker.id] = worker
        reply(ok=True, policy=self.policy, port=self.port)

    def remove(self, worker: Any) -> bool:
        """Take `worker` out; True when the handle has no worker left."""
        self.workers.pop(worker.id, None)
        return not self.workers

    def close(self) -> None:
        """Release the listening socket."""
        if self.sock.fileno() >= 0:
            self.sock.close()

    def fileno(self) -> int:
        """The listening socket's descriptor."""
        return self.sock.fileno()


def close_fd(fd: int) -> None:
    """Close a descriptor that may already be closed."""
    try:
        os.close(fd)
    except OSError:
        pass
