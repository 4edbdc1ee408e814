"""The keep-alive pool: one readiness set the workers share, so each request goes to a free worker.

Under rr a keep-alive connection stays with one worker, and its requests queue behind whatever
that worker is computing, even while another is idle. Once a connection has been answered and
kept open, its worker gives it back and the primary puts it in the pool instead:

- The pool is one epoll set, made by the primary and passed to every worker. Each connection
  is in it with EPOLLONESHOT: when its next request arrives, exactly one worker's poll reports
  it, and the set reports it to nobody else until it is re-armed.
- A worker takes from the pool only while its loop is free (nothing to compute), so the first
  free worker serves the next request, as a sync worker's accept queue would: one queue for
  all, request by request.
- Every worker holds its own descriptor of every pooled connection, at the same number as the
  primary's: epoll knows an entry by (file, descriptor number), and the worker that served a
  request re-arms the entry itself with that number. The numbers come from a range far above
  what a process opens by itself (`number_range`), chosen by the primary, installed by each
  worker with dup2.
- The worker that takes a connection serves its requests until nothing of a next one is
  buffered, then re-arms it; or, while it holds no more than its share of all the keep-alive
  clients, keeps it until the client pauses (as any kept connection). When the connection
  ends, that worker removes it from the set, shuts it down (the client sees the end although
  other descriptors of it stay open) and tells the primary, which closes its own and tells the
  others to close theirs.

The primary must know who holds a pooled connection: a worker that dies holding one would leave
it disarmed for good, and an idle one past the keep-alive timeout is closed by the primary,
never one a worker is serving. So each connection has a slot in the pool's `Table`, a small
shared-memory record (like the load board) the workers write: who holds it now, and since when
it has been idle. The primary also writes there each number's generation, bumped whenever the
number is given to a new connection: a worker whose link lags may still hold the old connection
at that number, and must not serve the new one's request from it (it reads its link first, or
hands the event back).

The link: each worker also gets a SOCK_SEQPACKET socketpair of its own for the pool's messages
(not its handoff lane, whose unread byte count is the primary's measure of the worker's backlog).
A message is one kind letter and one line per connection; ADD carries the descriptors.
"""
from __future__ import annotations

import array
import resource
import select
import socket
from typing import Any, Iterator

from .board import Board

ARM = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT  # report the next request to one worker

# Message kinds on a worker's pool link.
ADD = b"A"  # primary -> worker: pooled connections ("number host port" lines, descriptors attached)
DROP = b"D"  # primary -> worker: these connections ended, close your descriptors
CLOSED = b"C"  # worker -> primary: I ended these (removed from the set and shut down)
RETURN = b"R"  # worker -> primary: the set gave me these but I hold no descriptor: re-arm them
MAX_PER_MESSAGE = 64
_LINE_MAX = 80
_ANCILLARY = socket.CMSG_SPACE(MAX_PER_MESSAGE * array.array("i").itemsize)

# The table: CELLS int64 per connection slot, each with one writer at a time.
OWNER, IDLE_SINCE_NS, GEN = 0, 1, 2  # the worker id holding it (0: nobody); monotonic ns; generation
CELLS = 3
# After the last slot, the primary's figures: how many workers take from the set, how many
# connections are pooled, and how many keep-alive clients there are in all (those the workers keep
# between requests, pooled or not, and those idle in the set). A worker keeps a pooled connection
# only while it holds no more than its share of all the clients.
TAKERS, MEMBERS, CLIENTS = 0, 1, 2
MAX_SLOTS = 4096  # pooled connections at most (like parked ones); past that, they are parked
TOP_BASE = 32768  # the range starts no higher, so a descriptor table stays small


def number_range(soft_limit: int | None = None) -> tuple[int, int]:
    """(first number, how many) of the descriptors pooled connections use, in every process.

    The upper half of the descriptor limit, which the kernel hands out lowest first, so a
    process reaches it only by itself holding that many descriptors (a worker checks before it
    installs one there).
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if soft_limit is None else soft_limit
    if soft == resource.RLIM_INFINITY or soft > 2 * TOP_BASE:
        soft = 2 * TOP_BASE
    base = max(soft // 2, 64)
    return base, max(0, min(MAX_SLOTS, soft - base))


def raise_descriptor_limit() -> None:
    """Raise the soft descriptor limit to the hard one (up to 2 * TOP_BASE): the pool's range lives there."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * TOP_BASE if hard == resource.RLIM_INFINITY else min(hard, 2 * TOP_BASE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # keep the limit we have: the range is then smaller


class Table(Board):
    """The pooled connections' slots, mapped from a memfd (slot = descriptor number - base)."""

    __slots__ = ("slots",)

    def __init__(self, fd: int, slots: int) -> None:
        super().__init__(fd, _table_bytes(slots))
        self.slots = slots

    @classmethod
    def create(cls, slots: int) -> "Table":  # type: ignore[override]
        return cls(cls.new_memfd(_table_bytes(slots), "pycluster-pool"), slots)

    def get(self, slot: int, cell: int) -> int:
        return self.cells[slot * CELLS + cell]

    def set(self, slot: int, cell: int, value: int) -> None:
        self.cells[slot * CELLS + cell] = value

    def share(self) -> int:
        """The keep-alive clients one worker may keep between requests: an even share of all of
        them, rounded up (of the pooled ones, until the primary has counted the clients)."""
        takers = self.get(self.slots, TAKERS)
        clients = max(self.get(self.slots, CLIENTS), self.get(self.slots, MEMBERS))
        return -(-clients // takers) if takers > 0 else clients


def may_keep(kept_here: int, counted: bool, share: int) -> bool:
    """Whether a worker that keeps `kept_here` keep-alive clients (this connection among them if
    `counted`) may keep a pooled connection it is serving until its client pauses: only within
    `share` (Table.share), this one included; otherwise it goes back to the set after each request."""
    return kept_here + (0 if counted else 1) <= share


def _table_bytes(slots: int) -> int:
    return (max(1, slots) + 1) * CELLS * 8


# -- the link's messages -----------------------------------------------------------------
Item = tuple[int, int, Any]  # (descriptor number, its generation, peer address or None)


def encode(kind: bytes, items: list[Item], fds: list[int] | None = None
           ) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """One message: `kind`, then "number generation host port" per item; the descriptors (ADD) as
    SCM_RIGHTS."""
    lines = [kind]
    for number, gen, peer in items:
        host, port = (peer[0], peer[1]) if peer else ("-", 0)
        lines.append(f"{number} {gen} {host} {port}".encode("ascii", "replace")[:_LINE_MAX])
    ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    return b"\n".join(lines), ancdata


def decode(data: bytes, ancdata: list) -> tuple[bytes, list[Item], list[int]]:
    """(kind, [(number, generation, peer)], descriptors) of one message; unreadable lines are skipped."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    lines = data.split(b"\n")
    items: list[Item] = []
    for line in lines[1:]:
        parts = line.decode("ascii", "replace").split(" ")
        if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        host, port = parts[2], parts[3]
        items.append((int(parts[0]), int(parts[1]), (host, int(port)) if host != "-" and port.isdigit() else None))
    return lines[0][:1], items, fds


def send(sock: Any, kind: bytes, items: list[Item], fds: list[int] | None = None) -> None:
    """Write one message (BlockingIOError when the reader's queue is full)."""
    data, ancdata = encode(kind, items, fds)
    sock.sendmsg([data], ancdata)


def receive(sock: Any) -> tuple[bytes, list[Item], list[int]] | None:
    """Read one message; None at end of file. BlockingIOError when nothing is queued."""
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_PER_MESSAGE * (_LINE_MAX + 1) + 8, _ANCILLARY)
    if not data and not ancdata:
        return None
    return decode(data, ancdata)


def queued(sock: Any) -> Iterator[tuple[bytes, list[Item], list[int]] | None]:
    """Every message queued on `sock` now (non-blocking), then None if the other end is gone."""
    while True:
        try:
            message = receive(sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            message = None
        yield message
        if message is None:
            return
