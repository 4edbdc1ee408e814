"""The handoff lane's wire format: how the rr policy passes accepted connections to a worker.

Each worker of an rr listener gets its own lane, a SOCK_SEQPACKET socketpair. The primary
writes records into one end; the worker reads the other end, which the primary passes to
it in the queryServer reply and also keeps. A record is one fixed-width line per
connection, "host port", space-padded to LINE bytes with a newline, and the connections'
descriptors as SCM_RIGHTS in the same order. Fixed width makes FIONREAD / LINE the exact
number of connections the worker has not read yet, so flow control needs no
acknowledgements. Two short records carry no descriptors: PING (the primary asks to hear
when the worker has read everything so far) and PONG (the worker's answer). A draining
worker writes records it will not serve back up its lane; a worker giving up idle
keep-alive connections for balance writes them back marked IDLE (every line starts with
IDLE_MARK), and the primary places each when its next request arrives.

Both sides use this module: the primary's ends live in master/scheduling/rr/lane.py, the
worker's reading in master/worker/lane_reader.py.
"""
from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
import termios
from typing import Any

MAX_PER_RECORD = 64  # connections per record; a reader's ancillary buffer must hold this many
LINE = 64  # bytes per connection: an IPv6 address is at most 45 characters, a port 5
_ANCILLARY = socket.CMSG_SPACE(MAX_PER_RECORD * array.array("i").itemsize)
_RECORD_BYTES = MAX_PER_RECORD * LINE
_INT = b"\0\0\0\0"

PING, PONG = b"?", b"!"  # records without descriptors; a connection's record is never this short
IDLE_MARK = "~"

Conn = tuple[int, Any]  # (descriptor, peer address)


class Record(list):
    """The connections of one record: a list of Conn; `idle` when a worker handed them back idle."""

    idle = False


def encode(conns: list[Conn], idle: bool = False) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """One record: the peers as text, the descriptors as SCM_RIGHTS."""
    width, mark = LINE - 1, IDLE_MARK if idle else ""
    lines = "".join((mark + (f"{peer[0]} {peer[1]}" if peer else "- 0")).ljust(width)[:width] + "\n"
                    for _, peer in conns)
    fds = array.array("i", [fd for fd, _ in conns]).tobytes()
    return lines.encode("ascii"), [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]


def decode(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> Record:
    """The (descriptor, peer) pairs of one record; a missing peer is None."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    peers: list[Any] = []
    text = data.decode("ascii", "replace")
    for line in text.splitlines():
        host, _, port = line.rstrip().lstrip(IDLE_MARK).rpartition(" ")
        peers.append((host, int(port)) if host not in ("", "-") and port.isdigit() else None)
    record = Record((fd, peers[i] if i < len(peers) else None) for i, fd in enumerate(fds))
    record.idle = text.startswith(IDLE_MARK)
    return record


def send(sock: Any, conns: list[Conn], idle: bool = False) -> None:
    """Write one record (raises BlockingIOError when the reader's queue is full)."""
    data, ancdata = encode(conns, idle)
    sock.sendmsg([data], ancdata)


def receive(sock: Any) -> Record | bytes | None:
    """Read one record: its connections, PING or PONG; None at end of file.

    Raises BlockingIOError when nothing is queued.
    """
    data, ancdata, _flags, _addr = sock.recvmsg(_RECORD_BYTES, _ANCILLARY)
    if not ancdata:
        if not data:
            return None
        if data in (PING, PONG):
            return data
    return decode(data, ancdata)


class OutOfDescriptors(OSError):
    """The next record's descriptors do not fit in this process now; the record is still queued."""


def receive_whole(sock: Any) -> Record | bytes | None:
    """receive(), for a reader that may be short of descriptors: a record is taken whole or not at all.

    A plain read installs a record's descriptors one by one and drops those it cannot
    (MSG_CTRUNC): those connections are gone. So the record is peeked at first (which
    installs copies and leaves it queued); if they did not all fit, the copies are closed
    and OutOfDescriptors is raised with the record untouched. Otherwise the record is
    consumed without a control buffer (the kernel drops its own references) and the peeked
    copies are the connections.
    """
    data, ancdata, flags, _addr = sock.recvmsg(_RECORD_BYTES, _ANCILLARY, socket.MSG_PEEK)
    if not ancdata:
        if not data:
            return None
        if data in (PING, PONG):
            sock.recv(len(data))
            return data
    record = decode(data, ancdata)
    if flags & socket.MSG_CTRUNC:
        for fd, _ in record:
            os.close(fd)
        count = data.count(b"\n")
        raise OutOfDescriptors(errno.EMFILE, f"no room for the {count} connections of the next record")
    sock.recvmsg(_RECORD_BYTES)  # consume it; its descriptors were installed by the peek
    return record


def receive_all(sock: Any) -> tuple[list[Conn], list[Conn], bool]:
    """Every connection queued on `sock` right now (non-blocking): (ordinary, idle, whether a PONG was).

    Records are taken whole (receive_whole): out of descriptors, what is left stays queued.
    """
    conns: list[Conn] = []
    idle: list[Conn] = []
    pong = False
    while True:
        try:
            record = receive_whole(sock)
        except OSError:  # BlockingIOError: drained; OutOfDescriptors: left queued; else nothing more
            return conns, idle, pong
        if record is None:
            return conns, idle, pong
        if isinstance(record, list):
            (idle if record.idle else conns).extend(record)
        else:
            pong = pong or record == PONG


def unread_bytes(fd: int) -> int:
    """FIONREAD: bytes queued on this end and not yet read."""
    return ioctl_int(fd, termios.FIONREAD)


def ioctl_int(fd: int, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, request, _INT))[0]


