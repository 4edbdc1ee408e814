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
from gevent.socket import wait_read

from .balance import CLOSE, HAND_BACK, KEEP
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
    """A pywsgi handler that tells the server when its connection is idle between requests, and
    gives an idle keep-alive connection back to the primary when the balancer says so (rr)."""

    def handle(self) -> None:
        """Serve the connection's requests, registered with the server (and counted on the board) while open."""
        self.idle_since: float | None = None
        self.served = 0
        self.hand_back_next = False
        self.server.connections.add(self)
        try:
            super().handle()
        finally:
            self.server.connections.discard(self)

    def read_requestline(self) -> str:
        """Mark the connection idle while it waits for the next request line (or give it back)."""
        self.idle_since = time.monotonic()
        try:
            if self.served and self._given_back_while_idle():
                return ""  # the request loop ends; the connection lives on in the primary
            return super().read_requestline()
        finally:
            self.idle_since = None

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        """Say `Connection: close` when this response ends the connection (the client asked, we drain,
        or the balancer wants it elsewhere and it cannot be handed back), so the client does not
        reuse it and hit a reset."""
        runtime = self.server.runtime
        self.served += 1
        ending = _client_closes(self.environ) or runtime.draining
        verdict = KEEP if ending else runtime.balancer.at_boundary()
        self.hand_back_next = verdict == HAND_BACK
        if (ending or verdict == CLOSE) and not any(k.lower() == "connection" for k, _ in headers):
            headers.append(("Connection", "close"))
        return super().start_response(status, headers, exc_info)

    def _given_back_while_idle(self) -> bool:
        """Under rr, between two requests: give the connection back to the primary if it idles past
        park_after (or at once if the balancer asked), unless bytes of a next request are here."""
        balancer = self.server.runtime.balancer
        wait = 0.0 if self.hand_back_next else balancer.park_after
        if wait is None or self.server.runtime.draining or self._next_request_here():
            return False
        if wait:
            try:
                wait_read(self.socket.fileno(), timeout=wait)
                return False  # it came in time: serve it here
            except socket.timeout:
                pass
        if not balancer.hand_back(self.socket, self.client_address):
            return False
        self.socket.release()  # the primary has its own descriptor now; no shutdown
        self.socket = None
        return True

    def _next_request_here(self) -> bool:
        """Whether bytes of a next request are buffered or already queued (a look that never waits)."""
        sock = self.socket
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            return bool(self.rfile.peek(1))  # the buffer, else one non-blocking read: b"" when nothing came
        except OSError:
            return True  # broken: let the ordinary read find out and end it
        finally:
            sock.settimeout(timeout)

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

    def handle(self, sock: socket.socket, address: Any, counted: bool = False) -> None:
        """Serve one accepted connection, counted on the board while open (from its handoff, if `counted`)."""
        if not counted:
            self.runtime.connections += 1
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (or already closed): nothing to tune
        try:
            super().handle(sock, address)
        finally:
            self.runtime.connections -= 1

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
        # Counted the moment it leaves the lane: the primary must never see it in neither place.
        self.runtime.connections += 1
        self.group.spawn(self.handle, sock, peer, True)

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
    """Count requests and in-flight requests (on the board, where the primary sees them)."""

    def instrumented(environ: dict, start_response: Callable) -> Any:
        runtime.in_flight += 1
        try:
            return app(environ, start_response)
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
