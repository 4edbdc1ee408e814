"""Addresses and listening sockets, shared by the primary (listeners) and workers (reuseport)."""
from __future__ import annotations

import errno
import os
import socket


class ListenError(OSError):
    """The address cannot be listened on (in use, not permitted, not resolvable)."""


def parse_bind(bind: str | int) -> tuple[str, int]:
    """'0.0.0.0:3000', ':3000', '3000', '[::]:3000' or 3000 -> (host, port); ValueError otherwise."""
    text = str(bind).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "0.0.0.0", text
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"invalid bind address {bind!r}: expected HOST:PORT, e.g. 0.0.0.0:8000") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid bind address {bind!r}: port must be 0..65535")
    return host, port


def format_bind(host: str, port: int) -> str:
    """(host, port) back to the text parse_bind reads; IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


def close_fd(fd: int) -> None:
    """Close a descriptor that may already be closed."""
    try:
        os.close(fd)
    except OSError:
        pass
