"""The pywsgi engine: a WSGI app served by gevent.pywsgi through its public API, plus what it lacks.

Added around pywsgi: TCP_NODELAY on every connection (without it, headers and body written
separately stall ~40 ms on delayed ACKs), per-connection tracking so a drain can wait for
open exchanges, `Connection: close` on every response once draining, so keep-alive
clients move to another worker at a request boundary instead of being cut mid-request,
and the transport limits of WorkerSettings (pywsgi_limits.py: head, body and keep-alive
timeouts, head size and field count, body size, unambiguous framing) with the connection
cap (conn_cap.py) and descriptor-pressure logging (pressure.py) that every engine shares.
"""
from __future__ import annotations

import errno
import io
import socket
import time
from typing import Any, Callable

import gevent
import gevent.pool
from gevent.pywsgi import _BAD_REQUEST_RESPONSE, WSGIHandler, WSGIServer, _InvalidClientInput
from gevent.socket import wait_read

from ..core.net import close_fd
from .balance import CLOSE, HAND_BACK, KEEP
from .conn_cap import ConnectionCap
from .lane_reader import LaneReader
from .pressure import shared as shared_pressure_log
from .pywsgi_limits import (BoundedInput, Refusal, TimedReader, check_framing, linger, names_framing,
                            parse_header_lines, read_header_lines, read_request_line, request_line_limit,
                            seconds)
from .retryable_socket import RetryableSocket

# Call environ[NO_RETRY]() before a side effect a second run would repeat: under rr an
# idempotent request whose worker is SIGKILLed before it answers is otherwise served again
# by another worker (master/worker/retryable_socket.py). A no-op elsewhere.
NO_RETRY = "pycluster.no_retry"
GATHER_MAX = 64 * 1024  # a first body chunk up to this goes out in the headers' write
IDLE_CLOSE_AFTER = 0.5  # seconds a connection may sit between requests during a drain
HEAD_GRACE = 2.0  # seconds into a drain a request head still arriving may take to finish
POLL = 0.02
SEND_STALL = 30.0  # seconds a response write may make no progress when body_timeout is 0 (off)
DESCRIPTORS_OUT = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_PAUSE = 0.1  # seconds between accept attempts while out of descriptors


class TrackedHandler(WSGIHandler):
    """A pywsgi handler that applies the transport limits, tells the server when its connection is idle
    between requests, and gives an idle keep-alive connection back to the primary when the balancer says so (rr)."""

    def __init__(self, sock: Any, address: Any, server: "ClusterServer") -> None:
        self.reader = TimedReader(sock)
        self.reader.send_stall = server.send_stall
        super().__init__(sock, address, server, rfile=io.BufferedReader(self.reader, 8192))
        self.limits = server.settings
        self.accepted_at = time.monotonic()
        self.idle_since: float | None = None  # set while waiting for, or reading, a request head
        self.served = 0  # responses started on this connection
        self.kept = False  # kept alive after a response: counted on the board as a client that stays
        self.hand_back_next = False
        self.head_budget: int | None = None  # bytes the head's fields may still take
        self.refusal: Refusal | None = None

    def handle(self) -> None:
        """Serve the connection's requests, registered with the server (and counted on the board) while open."""
        self.server.connections.add(self)
        try:
            super().handle()
        finally:
            self.server.connections.discard(self)
            if self.kept:
                self.server.runtime.kept -= 1

    # -- the request head, within its limits ----------------------------------------------
    def handle_one_request(self) -> Any:
        """pywsgi's, with refusals answered here (then a short linger, then close)."""
        self.refusal = None
        try:
            result = super().handle_one_request()
        except Refusal as refusal:  # from the request line: pywsgi lets only socket errors through there
            self.refusal, result = refusal, None
        if self.refusal is not None:
            self._refuse(self.refusal)
            return None
        return result

    def read_requestline(self) -> str:
        """Read the request line under the head's deadline (keep-alive: after an idle wait), or give it back."""
        self.idle_since = time.monotonic()
        if self.served and not self.kept:
            self.kept = True
            self.server.runtime.kept += 1
        if self.served and self._given_back_while_idle():
            return ""  # the request loop ends; the connection lives on in the primary
        if self.served:
            self.reader.expect_next_request(self.limits.keepalive_timeout, self.limits.header_timeout)
        else:
            self.reader.expect_head(self.limits.header_timeout, since=self.accepted_at)
        line = read_request_line(self.rfile, self.server.line_limit)
        if self.limits.max_header_bytes:
            self.head_budget = max(0, self.limits.max_header_bytes - len(line))
        text = line.decode("latin-1")
        # Without its CRLF: pywsgi answers 414 itself at 8192 characters, CRLF included.
        return text.rstrip("\r\n") or text

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

    def MessageClass(self, fp: Any, *_args: Any) -> Any:  # noqa: N802 - pywsgi's hook for parsing the fields
        """The header fields, read against the head's byte budget and field count."""
        lines = read_header_lines(fp, self.head_budget, self.limits.limit_request_fields)
        headers = parse_header_lines(lines)
        if names_framing(lines):
            check_framing(headers)
        return headers

    def read_request(self, raw_requestline: str) -> bool:
        """pywsgi's parse, then the body's limit; from here on reads may stall body_timeout."""
        super().read_request(raw_requestline)
        limit = self.limits.max_body_bytes
        if limit and self.content_length and self.content_length > limit:
            raise Refusal(413, f"request body larger than {limit} bytes")
        self.reader.expect_body(self.limits.body_timeout)
        self.idle_since = None
        return True

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, Refusal):
            self.refusal = ex
            return None
        self.close_connection = True
        if isinstance(ex, OSError) and not isinstance(ex, _InvalidClientInput):
            return None  # a timeout or a reset: nobody is left to answer
        self.server.pressure.warn("bad-request", f"400 to {_peer(self)}: {str(ex)[:200]}")
        return ("400", _BAD_REQUEST_RESPONSE)

    def _refuse(self, refusal: Refusal) -> None:
        self.server.pressure.warn(f"refused-{refusal.status}", f"{refusal} (to {_peer(self)}): connection closed")
        try:
            _send_watched(self.socket, refusal.response, self.reader)
        except OSError:
            return
        linger(self.socket)

    # -- the body and the response --------------------------------------------------------
    def get_environ(self) -> dict:
        """pywsgi's environ with a bounded body, plus environ["pycluster.no_retry"] (always there)."""
        environ = super().get_environ()
        plain = self.wsgi_input
        if plain.content_length or plain.chunked_input:  # no body (most requests): nothing to bound
            self.wsgi_input = BoundedInput(plain, self.limits.max_body_bytes)
            if environ.get("wsgi.input") is plain:
                environ["wsgi.input"] = self.wsgi_input
        environ[NO_RETRY] = getattr(self.socket, "no_retry", _nothing)
        return environ

    def handle_one_response(self) -> None:
        """pywsgi's; a body left unread (past DISCARD_MAX) ends the connection."""
        super().handle_one_response()
        if getattr(self.wsgi_input, "left_unread", False):
            self.close_connection = True

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        """Say `Connection: close` when this response ends the connection (the client asked, we drain,
        the app refused the body with a 413 and it is never read, or the balancer wants it elsewhere
        and it cannot be handed back), so the client does not reuse it and hit a reset."""
        runtime = self.server.runtime
        self.served += 1
        ending = _client_closes(self.environ) or runtime.draining or status[:3] == "413"
        verdict = KEEP if ending else runtime.balancer.at_boundary()
        self.hand_back_next = verdict == HAND_BACK
        if (ending or verdict == CLOSE) and not any(k.lower() == "connection" for k, _ in headers):
            headers.append(("Connection", "close"))
        return super().start_response(status, headers, exc_info)

    def _send_error_response_if_possible(self, error_code: int) -> None:
        if error_code == 400 and getattr(self.wsgi_input, "over_limit", False) and not self.response_length:
            body = b"request body too large\n"
            try:
                super().start_response("413 Content Too Large", [
                    ("Content-Type", "text/plain"), ("Connection", "close"), ("Content-Length", str(len(body)))])
                self.write(body)
            except OSError:
                self.close_connection = True
            return
        super()._send_error_response_if_possible(error_code)

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
        self._sendall(gathered)

    def _sendall(self, data: bytes) -> None:
        if self._gathering is not None:
            self._gathering += data
            return
        try:
            _send_watched(self.socket, data, self.reader)
        except OSError as ex:
            self.status = f"socket error: {ex}"
            if self.code and self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def log_request(self) -> None:
        """Access logs are off by default: a line per request costs real throughput."""
        if self.server.access_log:
            super().log_request()


def _send_watched(sock: Any, data: Any, reader: TimedReader) -> None:
    """Send all of `data`; the sweeper cuts a write that waits send_stall for the client to read.

    A large answer goes out a send at a time, each watched on its own: a slow but live
    client gets it all, one that stops reading altogether does not hold the worker.
    """
    try:
        if len(data) <= GATHER_MAX:  # one write in practice
            reader.sending_since = time.monotonic()
            sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            reader.sending_since = time.monotonic()
            view = view[sock.send(view):]
    except OSError:
        if reader.expired == "send":
            raise BrokenPipeError(errno.EPIPE, f"the client read nothing for {reader.send_stall:.0f} s") from None
        raise
    finally:
        reader.sending_since = None


def _peer(handler: WSGIHandler) -> str:
    address = handler.client_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


class ClusterServer(WSGIServer):
    """WSGIServer that can be fed connections by the primary (rr), capped, and drained gracefully."""

    handler_class = TrackedHandler

    def __init__(self, listener: Any, app: Callable, runtime: Any, policy: str, *,
                 access_log: bool = False, **kwargs: Any) -> None:
        self.runtime = runtime
        self.settings = runtime.settings  # the transport limits (master/core/settings.py)
        self.line_limit = request_line_limit(self.settings)
        self.send_stall = seconds(self.settings.body_timeout) or SEND_STALL
        self.policy = policy
        self.family = socket.AF_INET  # rr: the primary's listener family, from its queryServer reply
        self.access_log = access_log
        self.connections: set[TrackedHandler] = set()
        self.lane: LaneReader | None = None  # rr: the handoff lane the primary writes connections into
        self.peek = False  # rr: peek at idempotent first requests (master/worker/retryable_socket.py)
        self.pressure = shared_pressure_log()
        self.cap = ConnectionCap(self.settings.worker_connections, log=self.pressure, board=runtime.board)
        self.taking = True  # False once draining: nothing may restart the accept loop
        self.group = gevent.pool.Pool()  # unbounded; a Pool because servers need its semaphore API
        super().__init__(listener, _instrument(app, runtime), spawn=self.group,
                         log=None if not access_log else "default", **kwargs)
        # gevent's accept loop asks full() before each accept and stops while it is true;
        # the cap restarts it when a connection ends (an unbounded Pool never would).
        self.full = self.cap.full
        self.cap.on_room(self._room_again)
        self.sweep_interval = sweep_interval(self.settings, self.send_stall)
        self._sweeper = gevent.spawn(self._sweep)

    def _sweep(self) -> None:
        """Cut connections past a limit (TimedReader.overdue), a few times a second."""
        while True:
            gevent.sleep(self.sweep_interval)
            now = time.monotonic()
            for handler in list(self.connections):
                reader = handler.reader
                why = reader.overdue(now)
                if why is not None and reader.expired is None:
                    reader.expired = why
                    _close_idle(handler)  # wakes the read or write blocked on it

    def _room_again(self) -> None:
        if self.taking and self.policy != "rr":
            self._start_accepting_if_started()

    def do_read(self) -> Any:
        """Accept one connection; out of descriptors, say so and pause instead of spinning."""
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno == errno.ECONNABORTED:
                return None  # the client gave up while queued: nothing to serve
            if exc.errno not in DESCRIPTORS_OUT:
                raise
            self.pressure.warn("accept", f"cannot accept ({exc.strerror}) with {self.cap.open} connections open: "
                                         f"new ones wait in the kernel's queue; retrying every {ACCEPT_PAUSE} s")
            self.stop_accepting()
            self._timer = self.loop.timer(ACCEPT_PAUSE)  # stop_accepting() cancels it, as gevent's own backoff
            self._timer.start(self._room_again)
            return None

    def do_handle(self, *args: Any) -> None:
        """Count the connection against the cap before its greenlet starts."""
        self.cap.opened()
        try:
            super().do_handle(*args)
        except BaseException:
            self.cap.closed()
            raise

    def handle(self, sock: socket.socket, address: Any, counted: bool = False) -> None:
        """Serve one accepted connection, counted on the board while open (from its handoff, if `counted`).

        Whoever accepted it counted it against the cap; it is released here.
        """
        if not counted:
            self.runtime.connections += 1
        try:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not TCP (or already closed): nothing to tune
            super().handle(sock, address)
        finally:
            self.runtime.connections -= 1
            self.cap.closed()

    def _serve(self, sock: socket.socket, address: Any) -> None:
        self.cap.opened()
        self.group.spawn(self.handle, sock, address)

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
        self.cap.opened()
        self.group.spawn(self.handle, sock, peer, True)

    def take_lane(self, fd: int, pool_fds: list[int] | None = None, reply: dict | None = None) -> None:
        """rr: serve what the primary writes into our handoff lane (master/core/lane.py), within the cap.
        This engine takes no part in the keep-alive pool (the primary keeps one for httptools only)."""
        for extra in pool_fds or ():
            close_fd(extra)
        self.lane = LaneReader(fd, self.accept_fd, lambda: self.runtime.draining, self.runtime.made_progress,
                               cap=self.cap, log=self.pressure)
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
        self.taking = False
        if self.policy == "rr" or not self.started:
            return
        listener = self.socket  # gevent keeps the raw, non-blocking socket here
        self.stop_accepting()  # gevent's: pause the accept loop, keep the listener
        for _ in range(1024):
            try:
                fd, address = listener._accept()
            except OSError:  # BlockingIOError: the queue is empty
                break
            self._serve(socket.socket(fileno=fd), address)
        self.close()

    def wait_idle(self, deadline: float | None = None) -> None:
        """Wait until every connection has ended; close those that will not bring a request soon.

        A connection between requests goes after IDLE_CLOSE_AFTER; one whose next head has
        begun arriving gets HEAD_GRACE from the start of the drain to finish it (a slow but
        real client), then goes too: 200 slowloris sockets must not hold a drain for the
        whole graceful timeout. A request being served is always waited for.
        """
        started = time.monotonic()
        while self.connections:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            for handler in list(self.connections):
                if handler.idle_since is None:
                    continue  # inside a request
                waited = now - max(handler.idle_since, started) if handler.reader.head_begun else now - handler.idle_since
                if waited >= (HEAD_GRACE if handler.reader.head_begun else IDLE_CLOSE_AFTER):
                    _close_idle(handler)
            gevent.sleep(POLL)
        self.group.kill(block=False)
        self._sweeper.kill(block=False)


def sweep_interval(settings: Any, send_stall: float) -> float:
    """How often to look for overdue connections: a quarter of the shortest limit, 0.05 to 1 s."""
    limits = [t for t in (settings.header_timeout, settings.body_timeout, settings.keepalive_timeout, send_stall) if t > 0]
    return min(1.0, max(0.05, min(limits, default=1.0) / 4))


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
