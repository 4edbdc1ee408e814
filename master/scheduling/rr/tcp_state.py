"""What the kernel's TCP counters say about a connection a dead worker had been handed.

The primary keeps copies of each worker's latest connections (master/scheduling/rr/handle.py).
When a worker dies, progress() tells how far it got with each, and close_gently() ends the
ones nobody can serve without destroying an answer still on its way.
"""
from __future__ import annotations

import socket
import struct
import termios

from ...core.lane import ioctl_int, unread_bytes

UNREAD, BEGUN, TOUCHED, ENDED = "unread", "begun", "touched", "ended"
_CLOSE_WAIT = 8  # the client closed its side: it has sent all it will, and may still await an answer
_STILL_OPEN = (1, _CLOSE_WAIT)  # and TCP_ESTABLISHED


def progress(fd: int) -> str:
    """How far a worker got with this TCP connection, from the kernel's own counters.

    UNREAD: its handler never started (no TCP_NODELAY, which a worker's handler sets
    first thing; the listener never sets it, so no connection inherits it) and nobody
    read from or wrote to it. BEGUN: the handler started but only peeked (every byte the
    client sent is still queued) and wrote nothing, not even into the send queue: an
    idempotent request the worker was serving (master/worker/retryable_socket.py). ENDED: the worker
    already shut it down, or answered and the client closed. TOUCHED: anything else, or a
    kernel too old to say.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        started = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        queued = unread_bytes(fd)
        unsent = ioctl_int(fd, termios.TIOCOUTQ)  # written but not yet sent or acknowledged
    except OSError:
        return TOUCHED
    finally:
        sock.detach()
    if len(info) < 160:
        return TOUCHED
    received, = struct.unpack_from("Q", info, 128)  # tcpi_bytes_received
    data_segs_out, = struct.unpack_from("I", info, 156)  # tcpi_data_segs_out
    state = info[0]  # tcpi_state
    if state not in _STILL_OPEN or (state == _CLOSE_WAIT and data_segs_out and not unsent and not queued):
        return ENDED  # shut down by the worker, or answered in full and closed by the client
    if data_segs_out or unsent or queued != received:
        return TOUCHED
    return BEGUN if started else UNREAD


def close_gently(fd: int, limit: int = 1 << 20) -> None:
    """Close a TCP connection with a FIN, not a reset: read away what it had unread first.

    Closing with unread bytes makes the kernel send a reset, which can destroy an answer
    still on its way to the client (a worker killed just after sending it).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        while limit > 0 and unread_bytes(fd) > 0:
            limit -= len(sock.recv(65536, socket.MSG_DONTWAIT))
    except OSError:
        pass  # nothing more to read, or not a connected TCP socket: just close
    finally:
        sock.close()


