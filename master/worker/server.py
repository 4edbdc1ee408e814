"""The pywsgi engine: a WSGI app served by gevent.pywsgi through its public API, plus what it lacks.

Added around pywsgi: TCP_NODELAY on every connection (without it, headers and body written
separately stall ~40 ms on delayed ACKs), per-connection tracking so a drain can wait for
open exchanges, and `Connection: close` on every response once draining, so keep-alive
clients move to another worker at a request boundary instead of being cut mid-request.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Callable

import gevent
import gevent.pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from .balance import KEEP
from .lane_reader import LaneReader
from .retryable_socket import RetryableSocket

# Call environ[NO_RETRY]() before a side effect a second run would repeat: under rr an
# idempotent request whose worker is SIGKILLed before it answers is otherwise served again
# by another worker (master/worker/retryable_socket.py). A no-op elsewhere.
NO_RETRY = "pycluster.no_retry"
GATHER_MAX = 64 * 1024  # a first body chunk up to this goes out in the headers' write
IDLE_CLOSE_AFTER = 0.5  # seconds a keep-alive connection may sit idle during a drain
POLL = 0.02


class TrackedHandler(WSGIHandler):
    """A pywsgi handler that tells the server when its connection is idle between requests."""

    def handle(self) -> None:
        """Serve the connection's requests, registered with the server (and counted on the board) while open."""
        self.idle_since: float | None = None
        self.server.connections.add(self)
        runtime = self.server.runtime
        runtime.connections += 1
        try:
            super().handle()
        finally:
            self.server.connections.discard(self)
            runtime.connections -= 1

    def read_requestline(self) -> str:
        """Mark the connection idle while it waits for the next request line."""
        self.idle_since = time.monotonic()
        try:
            return super().read_requestline()
        finally:
            self.idle_since = None

    def get_environ(self) -> dict:
        """pywsgi's environ, plus environ["pycluster.no_retry"] (always there, so apps need no check)."""
        environ = super().get_environ()
        environ[NO_RETRY] = getattr(self.socket, "no_retry", _nothing)
        return environ

    # -- one write for the head and the first body chunk ----------------------------------
    # pywsgi sends the status line and headers, then the body, in two writes: a worker
    # killed between them leaves the client with headers and no body, an answer nobody can
    # complete or retry. Gathered into one write (up to GATHER_MAX), a kill lands either
    # before it (the request is still whole: rr retries it) or after it (the whole answer
    # is in the kernel's hands); and a small answer costs one system call and one segment.
    _gathering: bytearray | None = None

    def _write_with_headers(self, data: bytes) -> None:
        if not data or len(data) > GATHER_MAX:
            super()._write_with_headers(data)
            return
        self._gathering = bytearray()
        try:
            super()._write_with_headers(data)  # its sends land in _gathering
            gathered = self._gathering
        finally:
            self._gathering = None
        super()._sendall(gathered)

    def _sendall(self, data: bytes) -> None:
        if self._gathering is not None:
            self._gathering += data
            return
        super()._sendall(data)

    def log_request(self) -> None:
        """Access logs are off by default: a line per request costs real throughput."""
        if self.server.access_log:
            super().log_request()


class ClusterServer(WSGIServer):
    """WSGIServer that can be fed connections by the primary (rr) and drained gracefully."""

    handler_class = TrackedHandler

    def __init__(self, listener: Any, app: Callable, runtime: Any, policy: str, *,
                 access_log: bool = False, **kwargs: Any) -> None:
        self.runtime = runtime
        self.policy = policy
        self.family = socket.AF_INET  # rr: the primary's listener family, from its queryServer reply
        self.access_log = access_log
        self.connections: set[TrackedHandler] = set()
        self.lane: LaneReader | None = None  # rr: the handoff lane the primary writes connections into
        self.peek = False  # rr: peek at idempotent first requests (master/worker/retryable_socket.py)
        self.group = gevent.pool.Pool()  # unbounded; a Pool because servers need its semaphore API
        super().__init__(listener, _instrument(app, runtime), spawn=self.group,
                         log=None if not access_log else "default", **kwargs)

    def handle(self, sock: socket.socket, address: Any) -> None:
        """Serve one accepted connection."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (or already closed): nothing to tune
        super().handle(sock, address)

    def accept_fd(self, fd: int, peer: tuple | None = None) -> None:
        """Serve a connection the primary accepted and handed over (rr).

        Family and type are given, and the peer comes from the primary's accept, so a
        handed-over connection costs no getsockopt/getpeername system calls here.
        """
        sock = RetryableSocket(self.family, socket.SOCK_STREAM, 0, fileno=fd)
        if self.peek:
            sock.peek_first_request()
        if peer is None:
            try:
                peer = sock.getpeername()
            except OSError:
                peer = ("", 0)
        self.group.spawn(self.handle, sock, peer)

    def take_lane(self, fd: int) -> None:
        """rr: serve what the primary writes into our handoff lane (master/core/lane.py)."""
        self.lane = LaneReader(fd, self.accept_fd, lambda: self.runtime.draining, self.runtime.made_progress)
        self.runtime.balancer.lane = self.lane
        self.lane.start()

    def take_handed_over(self) -> None:
        """rr: serve what the lane holds right now (the runtime calls this before draining)."""
        if self.lane is not None:
            self.lane.read_now()

    def stop_taking_connections(self) -> None:
        """Take no new connections (rr: the lane sends handoffs back while draining).

        Connections already queued on our listener are accepted and served first: closing
        the last descriptor of a listening socket resets whatever is still in its queue.
        """
        if self.policy == "rr" or not self.started:
            return
        listener = self.socket  # gevent keeps the raw, non-blocking socket here
        self.stop_accepting()  # gevent's: pause the accept loop, keep the listener
        for _ in range(1024):
            try:
                fd, address = listener._accept()
            except OSError:  # BlockingIOError: the queue is empty
                break
            self.group.spawn(self.handle, socket.socket(fileno=fd), address)
        self.close()

    def wait_idle(self, deadline: float | None = None) -> None:
        """Wait until every connection has ended; close keep-alive ones idle too long."""
        while self.connections:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            for handler in list(self.connections):
                if handler.idle_since is not None and now - handler.idle_since >= IDLE_CLOSE_AFTER:
                    _close_idle(handler)
            gevent.sleep(POLL)
        self.group.kill(block=False)


def _nothing() -> None:
    """environ["pycluster.no_retry"] where nothing is peeked at (shared, reuseport, retries off)."""


def _close_idle(handler: TrackedHandler) -> None:
    sock = getattr(handler, "socket", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _instrument(app: Callable, runtime: Any) -> Callable:
    """Count requests and in-flight requests; say `Connection: close` while draining or shedding."""
    balancer = runtime.balancer

    def instrumented(environ: dict, start_response: Callable) -> Any:
        runtime.in_flight += 1

        # Say so when this response ends the connection (the client asked, we drain, or the
        # balancer wants this connection elsewhere: pywsgi cannot give a connection back,
        # so a HAND_BACK is a close here): a client that is not told would reuse the
        # socket and hit a reset.
        closing = _client_closes(environ)

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            ending = closing or runtime.draining or balancer.at_boundary() != KEEP
            if ending and not any(k.lower() == "connection" for k, _ in headers):
                headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        try:
            return app(environ, start)
        finally:
            runtime.in_flight -= 1
            runtime.requests += 1

    return instrumented


def _client_closes(environ: dict) -> bool:
    """Whether this request's connection ends after the response anyway (so nothing to balance)."""
    connection = environ.get("HTTP_CONNECTION", "").lower()
    if environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
        return connection != "keep-alive"
    return connection == "close"
