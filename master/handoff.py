"""The handoff lane: how the rr policy passes accepted connections to one worker.

Each worker of an rr listener gets its own lane, a SOCK_SEQPACKET socketpair. The primary
writes records into one end; the worker reads the other end, which the primary passes to
it in the queryServer reply and also keeps. A record is one fixed-width line per
connection, "host port", space-padded to LINE bytes with a newline, and the connections'
descriptors as SCM_RIGHTS in the same order. Fixed width makes FIONREAD / LINE the exact
number of connections the worker has not read yet.

Why a lane of its own rather than the IPC channel, and no acknowledgements:
- The primary keeps the worker's end open, so whatever the worker has not read yet stays
  in the kernel's queue even after the worker dies; the primary reads it back then and
  hands those connections to another worker. A handed-over connection therefore needs no
  "accepted" reply (the only copies the primary keeps are of each worker's latest few,
  below).
- "How many connections has this worker not read yet?" is one FIONREAD on that same end,
  so flow control needs no acknowledgements either. Per connection the primary does
  accept, one share of a sendmsg, and close; nothing comes back.
- Only when every worker is behind does the primary need to hear when one catches up: it
  then sends a PING record, and the worker answers PONG once it has read up to it.
- A draining worker sends records it will not serve back up its lane (the primary's end
  is readable only then), and the primary gives them to another worker.
- A worker that dies may also have taken connections it never got to, or was serving
  when it was killed: the primary keeps its copies of the last few it handed over (the
  worker shuts each connection down when it is done, so a copy never holds a client up),
  and at the worker's death progress() says which ones another worker can serve as they
  are (master/scheduling/round_robin.py decides).
"""
from __future__ import annotations

import array
import fcntl
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

Conn = tuple[int, Any]  # (descriptor, peer address)


def encode(conns: list[Conn]) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """One record: the peers as text, the descriptors as SCM_RIGHTS."""
    width = LINE - 1
    lines = "".join((f"{peer[0]} {peer[1]}" if peer else "- 0").ljust(width)[:width] + "\n"
                    for _, peer in conns)
    fds = array.array("i", [fd for fd, _ in conns]).tobytes()
    return lines.encode("ascii"), [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]


def decode(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> list[Conn]:
    """The (descriptor, peer) pairs of one record; a missing peer is None."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    peers: list[Any] = []
    for line in data.decode("ascii", "replace").splitlines():
        host, _, port = line.rstrip().rpartition(" ")
        peers.append((host, int(port)) if host not in ("", "-") and port.isdigit() else None)
    return [(fd, peers[i] if i < len(peers) else None) for i, fd in enumerate(fds)]


def send(sock: Any, conns: list[Conn]) -> None:
    """Write one record (raises BlockingIOError when the reader's queue is full)."""
    data, ancdata = encode(conns)
    sock.sendmsg([data], ancdata)


def receive(sock: Any) -> list[Conn] | bytes | None:
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


def receive_all(sock: Any) -> tuple[list[Conn], bool]:
    """Every connection queued on `sock` right now (non-blocking), and whether a PONG was."""
    conns: list[Conn] = []
    pong = False
    while True:
        try:
            record = receive(sock)
        except OSError:  # BlockingIOError: drained; anything else: nothing more to read
            return conns, pong
        if record is None:
            return conns, pong
        if isinstance(record, list):
            conns.extend(record)
        else:
            pong = pong or record == PONG


UNREAD, BEGUN, TOUCHED, ENDED = "unread", "begun", "touched", "ended"
_CLOSE_WAIT = 8  # the client closed its side: it has sent all it will, and may still await an answer
_STILL_OPEN = (1, _CLOSE_WAIT)  # and TCP_ESTABLISHED


def progress(fd: int) -> str:
    """How far a worker got with this TCP connection, from the kernel's own counters.

    UNREAD: its handler never started (no TCP_NODELAY, which a worker's handler sets
    first thing; the listener never sets it, so no connection inherits it) and nobody
    read from or wrote to it. BEGUN: the handler started but only peeked (every byte the
    client sent is still queued) and wrote nothing, not even into the send queue: an
    idempotent request the worker was serving (master/handed_over.py). ENDED: the worker
    already shut it down, or answered and the client closed. TOUCHED: anything else, or a
    kernel too old to say.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        started = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        queued = unread_bytes(fd)
        unsent = _ioctl_int(fd, termios.TIOCOUTQ)  # written but not yet sent or acknowledged
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


def unread_bytes(fd: int) -> int:
    """FIONREAD: bytes queued on this end and not yet read."""
    return _ioctl_int(fd, termios.FIONREAD)


def _ioctl_int(fd: int, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, request, _INT))[0]


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


class Lane:
    """The primary's two ends of one worker's lane."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.theirs.setblocking(False)
        self.unread = 0  # connections the worker has not read: exact after refresh(), else at most
        self.pinged = False  # a PING is on its way and no PONG has come back yet

    def refresh(self) -> int:
        """Ask the kernel how many connections the worker has not read yet."""
        self.unread = unread_bytes(self.theirs.fileno()) // LINE
        return self.unread

    def send(self, conns: list[Conn]) -> None:
        """Hand `conns` over; BlockingIOError (queue full) leaves them with the caller."""
        send(self.ours, conns)
        self.unread += len(conns)

    def ping(self) -> None:
        """Ask the worker to say when it has read everything sent so far (once at a time)."""
        if not self.pinged:
            try:
                self.ours.send(PING)
                self.pinged = True
            except OSError:
                pass  # queue full: the next distribute asks again

    def returned(self) -> tuple[list[Conn], bool]:
        """Connections a draining worker sent back, and whether it answered our PING."""
        conns, pong = receive_all(self.ours)
        if pong:
            self.pinged = False
            self.unread = 0  # nothing is sent to a pinged lane, so it has read everything
        return conns, pong

    def unclaimed(self) -> list[Conn]:
        """What the worker never read. Only once it is dead: before that it may be reading."""
        return receive_all(self.theirs)[0]

    def close(self) -> None:
        """Close both ends (the caller has taken every connection out first)."""
        self.ours.close()
        self.theirs.close()
