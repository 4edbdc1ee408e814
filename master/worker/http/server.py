"""The httptools engine's server: the interface serve.py drives, the same as the pywsgi engine's.

It owns the worker's connections (the Poller), where they come from (intake.py), the cap on
how many are open at once, and the drain: stop taking connections, give keep-alive connections
back to the master (rr, while it takes them) or answer with `Connection: close` and close them
once idle, wait until all have ended.
"""
from __future__ import annotations

import _socket
import gc
import socket
import sys
import time
from typing import Any, Callable

import gevent

from ...core.policies import SCHED_NONE, SCHED_RR
from ..conn_cap import ConnectionCap
from ..lane_reader import LaneReader
from ..pressure import shared as shared_pressure_log
from .connection import Connection
from .intake import ListenerIntake
from .limits import Limits
from .parse import READ_SIZE
from .body import NO_BODY
from .poller import Poller
from .pool_intake import PoolIntake

POLL = 0.02  # seconds between two looks at the open connections while draining
SWEEP_MIN, SWEEP_MAX = 0.02, 0.25  # bounds on the sweep's period (a tenth of the shortest timeout)
POOL_FOR = 1.0  # seconds after requests that computed during which kept connections go into the pool


def base_environ(extra: dict | None) -> dict:
    """What every request's environ starts from (serve.py adds SERVER_NAME/PORT, wsgi.multiprocess)."""
    environ = {
        "GATEWAY_INTERFACE": "CGI/1.1", "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "pycluster",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": NO_BODY, "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
        # The body ends where the request's framing says (werkzeug reads a chunked body only with this).
        "wsgi.input_terminated": True,
    }
    environ.update(extra or {})
    return environ


class HttpServer:
    """Serves a WSGI app on connections from a listener or the primary's lane (rr)."""

    def __init__(self, listener: Any, app: Callable, runtime: Any, policy: str, *,
                 access_log: bool = False, environ: dict | None = None) -> None:
        self.app = app
        self.runtime = runtime
        self.policy = policy
        self.family = socket.AF_INET  # rr: the primary's listener family, from its queryServer reply
        self.peek = False  # rr: peek at idempotent first requests (connection.py)
        self.access_log = access_log
        self.limits = Limits.from_settings(runtime.settings)
        self.environ = base_environ(environ)
        self.hub = gevent.get_hub()
        self.buffer = bytearray(READ_SIZE)  # every read lands here; the parser copies what it keeps
        self.view = memoryview(self.buffer)
        self.poller = Poller(self.hub.loop, self._sweep_period(None))
        self.pressure = shared_pressure_log()
        self.cap = ConnectionCap(runtime.settings.worker_connections, log=self.pressure, board=runtime.board)
        self.listener = None if isinstance(listener, tuple) else listener  # rr: an address, never bound here
        self.intake: ListenerIntake | None = None
        self.lane: LaneReader | None = None  # rr: the handoff lane the primary writes connections into
        self.pool_intake: PoolIntake | None = None  # rr with the keep-alive pool (master/core/pool.py)
        self.started = False

    def _sweep_period(self, park_after: float | None) -> float:
        """A tenth of the shortest timeout, and often enough to park idle connections on time."""
        period = self.limits.shortest_timeout() / 10 or SWEEP_MAX
        if park_after:
            period = min(period, park_after / 2)
        return min(SWEEP_MAX, max(SWEEP_MIN, period))

    # -- where connections come from --------------------------------------------------------
    def _settle(self) -> None:
        # The app and its libraries are loaded by now: their objects (tens of thousands) live as
        # long as the worker, so they leave the collector's generations. A full collection then
        # walks only what serving created, instead of pausing every connection for ~20 ms.
        gc.freeze()
        self.started = True

    def start(self) -> None:
        """Accept on our own listener (shared: one per wake-up, so no worker grabs a burst)."""
        self.intake = ListenerIntake(self.listener, self._accepted, self.cap,
                                     1 if self.policy == SCHED_NONE else 64, self.pressure)
        self.intake.start()
        self._settle()

    def take_lane(self, fd: int, pool_fds: list[int] | None = None, reply: dict | None = None) -> None:
        """rr: serve what the primary writes into our handoff lane (master/core/lane.py), within the cap,
        and what the keep-alive pool reports to us, when the primary keeps one."""
        runtime = self.runtime
        if pool_fds and len(pool_fds) == 3 and reply and reply.get("pool_slots"):
            self.pool_intake = PoolIntake(self, pool_fds, int(reply["pool_base"]), int(reply["pool_slots"]),
                                          self._pooled_connection)
        self.lane = LaneReader(fd, self.accept_fd, lambda: runtime.draining, runtime.made_progress,
                               cap=self.cap, log=self.pressure)
        runtime.balancer.lane = self.lane  # hand-backs go up it (master/worker/balance.py)
        self.poller.set_period(self._sweep_period(runtime.balancer.park_after))
        self.lane.start()
        self._settle()

    def take_handed_over(self) -> None:
        """rr: serve what the lane holds right now (the runtime calls this before draining)."""
        if self.lane is not None:
            self.lane.read_now()

    def _pooled_connection(self, sock: Any, peer: Any) -> Connection:
        if self.family != socket.AF_UNIX:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # set on the connection, for all
            except OSError:
                pass
        # Never peeked at: only a connection's first request is retried (connection.py), and that
        # one was served before the connection came into the pool.
        conn = Connection(self, sock, peer, True, False)
        conn.pool = self.pool_intake
        return conn

    def _accepted(self, fd: int, address: Any) -> None:
        self._open(fd, address, False, False)

    def accept_fd(self, fd: int, peer: tuple | None = None) -> None:
        """Serve a connection the primary accepted and handed over (rr)."""
        self._open(fd, peer, True, self.peek)

    def _open(self, fd: int, peer: Any, handed_over: bool, peek: bool) -> None:
        # Counted the moment it is ours: the primary must never see a connection in neither place.
        self.runtime.connections += 1
        self.cap.opened()
        family = self.family if handed_over else self.intake.sock.family
        sock = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            try:
                # Without it, a head and a body written apart stall ~40 ms on delayed ACKs.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # already closed by the client: the first read says so
        if peer is None:
            try:
                peer = sock.getpeername()
            except OSError:
                peer = ("", 0)
        self.poller.add(Connection(self, sock, peer, handed_over, peek))

    def connection_closed(self, conn: Connection) -> None:
        """A connection ended, or went back to the primary (the connection calls this last)."""
        self.runtime.connections -= 1
        self.cap.closed()

    # -- draining ---------------------------------------------------------------------------
    def stop_taking_connections(self) -> None:
        """Take no new connections (rr: the lane sends handoffs back while draining)."""
        self.poller.draining = True  # keep-alive connections idle for a moment now go back (rr) or close
        if self.pool_intake is not None:
            self.pool_intake.stop()
        if self.policy != SCHED_RR and isinstance(self.intake, ListenerIntake):
            self.intake.stop()

    def wait_idle(self, deadline: float | None = None) -> None:
        """Wait until every connection has ended; past the deadline, close those waiting on a client."""
        self.poller.draining = True
        while self.poller.conns or self._serving_pooled():
            if deadline is not None and time.monotonic() >= deadline:
                self.poller.closing = True  # the next sweep expires everything that waits on a client
                gevent.sleep(2 * SWEEP_MAX)
                break
            gevent.sleep(POLL)

    def pooling_now(self) -> bool:
        """Whether kept connections go into the keep-alive pool now: while this worker has served
        requests that computed within POOL_FOR (with time slices off, always)."""
        if self.pool_intake is None:
            return False
        slicer = self.runtime.slicer
        return not slicer.installed or slicer.computing_lately(POOL_FOR, time.monotonic())

    def _serving_pooled(self) -> bool:
        intake = self.pool_intake
        return intake is not None and any(conn.taken for conn in intake.conns.values())

    def log_access(self, environ: dict, status: str | None, seconds: float) -> None:
        """One access log line (only with --access-log: a line per request costs real throughput)."""
        query = environ.get("QUERY_STRING")
        target = environ["PATH_INFO"] + ("?" + query if query else "")
        print(f'{environ.get("REMOTE_ADDR") or "-"} - - [{time.strftime("%d/%b/%Y %H:%M:%S")}] '
              f'"{environ["REQUEST_METHOD"]} {target} {environ["SERVER_PROTOCOL"]}" '
              f'{(status or "-").split(" ", 1)[0]} {seconds:.6f}', file=sys.stderr, flush=True)
