"""The worker side of the cluster (`cluster.worker` in a worker process).

Runs under gevent (master.child patches before anything is imported): one greenlet reads
the IPC channel, one sends heartbeats, the WSGI server serves. Because the heartbeat is a
greenlet, it stops exactly when the event loop is blocked (a request spinning on the CPU
or a stopped process) and keeps going while requests merely wait on I/O, however long.
"""
from __future__ import annotations

import itertools
import os
import socket
import sys
import threading
import time
from typing import Any

import gevent
import gevent.event

from ..core import board as fields
from ..core import ipc
from ..core.board import Board
from ..core.events import EventEmitter
from ..core.net import close_fd
from ..core.procstats import rss_bytes
from ..core.settings import WorkerSettings
from .balance import Balancer
from .time_slice import TimeSlicer

ORPHAN_DRAIN_SECONDS = 1.0  # primary gone: finish what we can quickly, then leave


class WorkerRuntime(EventEmitter):
    """This worker's identity, its channel to the primary, and its servers.

    Events: message(msg), disconnect().
    """

    def __init__(self, channel_fd: int, worker_id: int, master_pid: int,
                 settings: WorkerSettings | None = None) -> None:
        super().__init__()
        self.id = worker_id
        self.settings = settings or WorkerSettings()
        self.board = _attach_board()  # live figures the primary reads (master/core/board.py)
        self.balancer = Balancer(self.board)  # asked at every keep-alive request boundary (balance.py)
        self.slicer = TimeSlicer(self.settings.time_slice)  # engines mark app code; serve() starts it
        self.master_pid = master_pid
        self.sock = socket.socket(fileno=channel_fd)
        self.started = time.monotonic()
        self.servers: list[Any] = []
        self.draining = False
        self.connected = True
        self.exited_after_disconnect = False
        self.finished = gevent.event.Event()
        self._decoder = ipc.FrameDecoder()
        self._send_lock = threading.Lock()  # a gevent lock once patched: frames never interleave
        self._seq = itertools.count(1)
        self._pending: dict[int, gevent.event.AsyncResult] = {}
        self._greenlets: list[gevent.Greenlet] = []

    @classmethod
    def from_environment(cls) -> "WorkerRuntime":
        """Build the runtime from what the primary put in our environment."""
        return cls(int(os.environ["PYCLUSTER_CHANNEL_FD"]), int(os.environ["PYCLUSTER_WORKER_ID"]),
                   int(os.environ.get("PYCLUSTER_MASTER_PID", "0")), WorkerSettings.from_env())

    @property
    def pid(self) -> int:
        """This worker's pid."""
        return os.getpid()

    # -- live figures, kept on the board so the primary sees them as they change -----------
    @property
    def in_flight(self) -> int:
        """Requests being served now."""
        return self.board.cells[fields.IN_FLIGHT]

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        cells = self.board.cells
        if value and not cells[fields.IN_FLIGHT]:
            cells[fields.BUSY_SINCE_NS] = fields.now_ns()
        elif not value:
            cells[fields.BUSY_SINCE_NS] = 0
        cells[fields.IN_FLIGHT] = value

    @property
    def requests(self) -> int:
        """Requests served so far."""
        return self.board.cells[fields.SERVED]

    @requests.setter
    def requests(self, value: int) -> None:
        cells = self.board.cells
        cells[fields.SERVED] = value
        cells[fields.PROGRESS] += 1

    def made_progress(self) -> None:
        """Something got done (a lane read, a request finished): the primary tells a stall by its absence."""
        self.board.cells[fields.PROGRESS] += 1

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self.board.cells[fields.CONNECTIONS]

    @connections.setter
    def connections(self, value: int) -> None:
        self.board.cells[fields.CONNECTIONS] = value

    @property
    def kept(self) -> int:
        """Open connections that were kept alive after a response (keep-alive clients)."""
        return self.board.cells[fields.KEPT]

    @kept.setter
    def kept(self, value: int) -> None:
        self.board.cells[fields.KEPT] = value

    def start(self) -> None:
        """Start reading the channel and heartbeating; tell the primary we are online."""
        self._greenlets.append(gevent.spawn(self._read_loop))
        self._greenlets.append(gevent.spawn(self._heartbeat_loop))
        self.notify("online")

    # -- sending --------------------------------------------------------------------------
    def _write(self, message: dict[str, Any]) -> None:
        data = ipc.encode(message)
        if not self.connected:
            raise ipc.ChannelClosed("the IPC channel to the primary is closed")
        try:
            with self._send_lock:
                self.sock.sendall(data)
        except OSError as exc:
            self._channel_closed()
            raise ipc.ChannelClosed(f"the IPC channel to the primary is closed: {exc}") from None

    def send(self, message: Any) -> None:
        """Send a user message to the primary."""
        self._write(ipc.user_envelope(message))

    def notify(self, act: str, **fields: Any) -> bool:
        """Send an internal notification; False when the channel is already closed."""
        try:
            self._write(ipc.internal(act, **fields))
            return True
        except ipc.ChannelClosed:
            return False

    def request(self, act: str, timeout: float = 30.0, **fields: Any) -> tuple[dict[str, Any], list[int]]:
        """Send an internal request and wait for its reply (ChannelClosed if none can come)."""
        seq = next(self._seq)
        result = gevent.event.AsyncResult()
        self._pending[seq] = result
        try:
            self._write(ipc.internal(act, seq=seq, **fields))
            reply = result.get(timeout=timeout)
        except gevent.Timeout:
            raise TimeoutError(f"the primary did not answer {act!r} within {timeout} s") from None
        finally:
            self._pending.pop(seq, None)
        if reply is None:
            raise ipc.ChannelClosed(f"the IPC channel closed before the primary answered {act!r}")
        return reply

    # -- receiving ------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while self.connected:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    ipc.READ_SIZE, socket.CMSG_SPACE(ipc.MAX_FDS_PER_READ * 4))
            except OSError:
                break
            fds = ipc.fds_from_ancdata(ancdata)
            if not data and not fds:
                break
            try:
                frames = self._decoder.feed(data, fds)
            except ipc.MessageError as exc:
                print(f"worker {self.id}: {exc}; closing the channel", file=sys.stderr)
                break
            for message, attached in frames:
                self._dispatch(message, attached)
        self._channel_closed()

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        if message["cmd"] == ipc.USER:
            self.emit("message", message.get("data"))
            return
        act = message.get("act")
        if act == "reply":
            pending = self._pending.get(message.get("ack", -1))
            if pending is not None:
                pending.set((message, fds))
            else:
                for fd in fds:
                    close_fd(fd)
        elif act == "disconnect":
            self.begin_drain()
        else:
            for fd in fds:
                close_fd(fd)

    # -- leaving --------------------------------------------------------------------------
    def disconnect(self) -> None:
        """Leave on our own: tell the primary it is deliberate, drain, and exit."""
        self.exited_after_disconnect = True
        self.notify("exiting")
        self.begin_drain()

    def begin_drain(self, deadline: float | None = None) -> None:
        """Stop accepting, let open requests finish, then close the channel."""
        if self.draining:
            return
        for server in self.servers:
            server.take_handed_over()  # rr: handed over before this moment, so ours to serve
        self.draining = True
        gevent.spawn(self._drain, deadline)

    def add_server(self, server: Any) -> None:
        """Register a server (drains stop it; rr servers read their lane dry first)."""
        self.servers.append(server)

    def _drain(self, deadline: float | None) -> None:
        for server in self.servers:
            server.stop_taking_connections()
        for server in self.servers:
            server.wait_idle(deadline)
        self._close_channel()
        self.finished.set()

    def _close_channel(self) -> None:
        if self.connected:
            self.connected = False
            try:
                self.sock.close()
            except OSError:
                pass
            self.emit("disconnect")

    def _channel_closed(self) -> None:
        was_draining = self.draining
        if self.connected:
            self._close_channel()
        for result in list(self._pending.values()):
            result.set(None)
        if not was_draining:
            # The primary is gone (or dropped us): never linger as an orphan.
            self.begin_drain(deadline=time.monotonic() + ORPHAN_DRAIN_SECONDS)
            gevent.spawn_later(ORPHAN_DRAIN_SECONDS + 0.5, _exit_now)

    def wait(self) -> None:
        """Block until this worker has drained and its channel is closed."""
        self.finished.wait()

    # -- heartbeat and stats --------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """What this worker reports about itself."""
        return {"requests": self.requests, "in_flight": self.in_flight, "rss": rss_bytes(),
                "uptime": round(time.monotonic() - self.started, 3), "pid": os.getpid(),
                "draining": self.draining}

    def _heartbeat_loop(self) -> None:
        while self.connected:
            self.board.cells[fields.HEARTBEATS] += 1
            if not self.notify("heartbeat", **self.stats()):
                return
            gevent.sleep(self.settings.heartbeat_interval)


def _attach_board() -> Board:
    """The board the primary made for this worker, or a private one (a worker started another way)."""
    fd = os.environ.pop(fields.ENV, None)
    try:
        return Board(int(fd)) if fd else Board.create()
    except (OSError, ValueError):
        return Board.create()


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
