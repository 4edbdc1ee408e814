"""One connection: read, parse, call the app, write, request after request, in one greenlet.

The greenlet runs the app too, so an app that waits (Redis) yields to the other connections
through gevent as usual. It waits on its client only through the Poller (poller.py), which
switches back into it when the socket is ready or its deadline has passed.

Two things set a connection the primary handed over (rr) apart from one we accepted:
- the primary keeps copies of recent connections, so ours is shut down before its
  descriptor closes, or the client would not see the end;
- its first request is peeked at, not read, when it is idempotent and arrived whole: the
  bytes stay in the kernel's queue until the first byte of the answer is sent (or the app
  calls environ["pycluster.no_retry"]()), so if this worker is SIGKILLed before that, the
  primary finds the request whole and another worker serves it (master/scheduling/rr/rescue.py).
"""
from __future__ import annotations

import socket
import sys
import time
import traceback
from typing import Any

from greenlet import GreenletExit, getcurrent, greenlet

from ..balance import HAND_BACK, KEEP
from ..retryable_socket import IDEMPOTENT
from ..time_slice import Turn, computing_client
from .body import Body
from .errors import ClientGone, HttpError, error_response
from .limits import DISCARD_MAX
from .parse import READ_SIZE, Request, RequestParser
from .poller import EXPIRED, IN, READ_WAIT, WRITE_WAIT
from .response import (CONTINUE, GATHER_MAX, LAST_CHUNK, NO_BODY_STATUS, chunk, date_line, finish_head,
                       head_lines)

NO_RETRY = "pycluster.no_retry"
LINGER_SECONDS = 1.0  # after an error answer, how long the client's remaining bytes are read and dropped
LINGER_BYTES = 1024 * 1024  # ... and how many at most
RUNNERS_MAX = 256  # idle greenlets kept for the next connections
_switch = greenlet.switch
_monotonic = time.monotonic


def _nothing() -> None:
    """environ["pycluster.no_retry"] where nothing is peeked at (shared, reuseport, retries off)."""


def _serve_connections(conn: "Connection", woke: Any) -> None:
    """A greenlet's life: serve one connection, then wait in the hub to be given the next.

    Starting a greenlet costs ~8 µs, twenty times a switch into one that exists: with a new
    connection per request, that alone was a tenth of a request's cost.
    """
    runners, hub = conn.server.poller.runners, conn.hub
    while True:
        conn._run(woke)
        conn = woke = None  # hold nothing while idle
        if len(runners) >= RUNNERS_MAX:
            return
        runners.append(getcurrent())
        conn, woke = _switch(hub)


class Connection:
    """A client connection and the greenlet that serves it."""

    __slots__ = ("server", "sock", "fd", "peer", "hub", "greenlet", "parser", "handed_over", "handed", "peeked",
                 "parking",
                 "waiting", "ready_bits", "deadline", "idle", "since", "head_since", "writes_watched",
                 "req", "status", "headers", "head_sent", "keep", "chunked", "remaining", "no_body",
                 "hand_back", "turn", "kept", "pool", "taken", "released")

    def __init__(self, server: Any, sock: Any, peer: Any, handed_over: bool, peek: bool) -> None:
        self.server = server
        self.sock = sock  # a non-blocking _socket.socket
        self.fd = sock.fileno()
        self.peer = peer
        self.hub = server.hub
        self.greenlet: Any = None  # given by start(), at the first event (or expiry)
        template = server.environ.copy()
        template["REMOTE_ADDR"], template["REMOTE_PORT"] = (str(peer[0]), str(peer[1])) if peer else ("", "")
        template[NO_RETRY] = self.no_retry if peek else _nothing
        self.parser = RequestParser(template, server.limits, self._body)
        self.handed_over = handed_over  # the primary holds a copy: shut down before closing
        self.handed = False  # given back to the primary (hand-back): our descriptor closes, no shutdown
        self.parking = False  # idle, waiting park_after before going back to the primary (rr)
        self.peeked = -1 if peek else 0  # -1: peek at the first read; > 0: bytes peeked, not consumed
        self.waiting = READ_WAIT  # the events the greenlet waits for (0 while it runs)
        self.ready_bits = 0  # events that arrived while it was not waiting
        now = _monotonic()
        self.deadline = now + server.limits.header_timeout if server.limits.header_timeout else 0.0
        self.idle, self.since, self.head_since = True, now, 0.0
        self.writes_watched = False
        self.req: Request | None = None
        self.status: str | None = None
        self.headers: list = []
        self.head_sent = self.keep = self.chunked = self.no_body = self.hand_back = False
        self.remaining = -1
        self.turn = Turn()  # this connection's use of the CPU, for time slices
        self.kept = False  # kept alive after a response: counted on the board as a client that stays
        self.pool: Any = None  # the keep-alive pool's intake, for a pooled connection (pool_intake.py)
        self.taken = False  # pooled: the set reported it to us and we serve it until it is idle again
        self.released = False  # pooled: idle at a boundary, to be re-armed in the set as the greenlet ends

    def no_retry(self) -> None:
        """environ["pycluster.no_retry"](): consume a peeked request now, so it is never served twice."""
        if self.peeked > 0:
            self._consume_peeked()

    def _body(self, req: Request) -> Body:
        return Body(self, req)

    def take(self, woke: Any) -> None:
        """Pooled: the shared set reported this connection to us; serve it until it is idle again."""
        server = self.server
        self.taken = True
        server.runtime.connections += 1
        server.cap.opened()
        self.idle, self.since, self.head_since, self.deadline = True, _monotonic(), 0.0, 0.0
        self.start(woke)

    def forget(self) -> None:
        """Pooled and idle here: the connection ended elsewhere, so close our descriptor of it."""
        self.sock.close()
        self.parser = self.req = None

    def start(self, woke: Any) -> None:
        """Serve in an idle runner greenlet, or a new one (called in the hub, at the first event)."""
        runners = self.server.poller.runners
        if runners:
            self.greenlet = runners.pop()
            self.greenlet.switch((self, woke))
        else:
            self.greenlet = greenlet(_serve_connections, self.hub)
            self.greenlet.switch(self, woke)

    # -- the connection's life --------------------------------------------------------------
    def _run(self, woke: Any) -> None:
        self.waiting = 0
        try:
            if woke is not EXPIRED:
                self.ready_bits = woke
                self._serve_all()
        except ClientGone:
            pass
        except HttpError as exc:
            self._refuse(exc.status, exc.reason)
        except GreenletExit:
            raise
        except BaseException:  # noqa: BLE001 - a bug here ends this connection, never the worker
            traceback.print_exc(file=sys.stderr)
        finally:
            self._finish()

    def _serve_all(self) -> None:
        parser = self.parser
        ready = parser.ready
        while True:
            if ready:
                if not self._serve(ready.popleft()):
                    return
                if self.hand_back and self.pool is not None and self._idle_here():
                    self.released = True  # back in the set: its next request goes to a free worker
                    return
                if not self.kept:
                    self.kept = True
                    self.server.runtime.kept += 1
            elif parser.stopped:
                if parser.error:
                    raise HttpError(parser.error, parser.reason)
                return
            else:
                woke = self._receive(self._next_deadline())
                if woke is EXPIRED and self.parking:  # idle past park_after: the primary places what comes next
                    self.parking = False
                    if self.pool is not None:
                        self.released = True  # pooled: back in the set, which does the same
                        return
                    if self._give_back():
                        return
                    woke = self._receive(self._idle_deadline())
                if woke is not True:  # closed, reset, or out of time (a late head is closed quietly, as
                    return  # pywsgi, gunicorn and nginx do: answering would only feed a slow reader)

    def _idle_here(self) -> bool:
        """Nothing of a next request has reached us (what the kernel holds, the set reports)."""
        parser = self.parser
        return not parser.ready and parser.current is None and not parser.in_head and not self.ready_bits & READ_WAIT

    def _next_deadline(self) -> float:
        """When the wait for the next bytes ends: head, body being dropped, or idle keep-alive."""
        limits, now = self.server.limits, _monotonic()
        self.parking = False
        if self.parser.in_head:
            if not self.head_since:
                self.head_since = now
            return self.head_since + limits.header_timeout if limits.header_timeout else 0.0
        self.head_since = 0.0
        if self.parser.current is not None:
            timeout = limits.body_timeout
        else:
            self.idle, self.since, timeout = True, now, limits.keepalive_timeout
            runtime = self.server.runtime
            balancer = runtime.balancer
            park = balancer.park_after  # None unless the primary can take idle connections (rr)
            if park is not None and not (timeout and timeout <= park):
                if not runtime.draining:
                    self.parking = True
                    return now + park
                if balancer.takes_back_while_draining():  # an answer's hand-back failed: at the next sweep
                    self.parking = True
                    return now
        return now + timeout if timeout else 0.0

    def _idle_deadline(self) -> float:
        timeout = self.server.limits.keepalive_timeout
        return self.since + timeout if timeout else 0.0

    def _finish(self) -> None:
        server = self.server
        if self.kept:
            server.runtime.kept -= 1
            self.kept = False
        server.poller.remove(self)
        pool = self.pool
        if pool is not None:
            self.taken = self.writes_watched = False
            if self.released:
                self.released = False
                self.greenlet = None
                if pool.release(self):
                    self.req = None
                    server.connection_closed(self)  # one fewer being served here; it stays open
                    return
        sock = self.sock
        if self.handed_over and not self.handed:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more
        if pool is not None:
            pool.ended(self)
        sock.close()  # handed back: only our descriptor closes, the primary holds its own
        self.parser = self.req = self.greenlet = None  # the environ template refers back to us
        server.connection_closed(self)

    # -- reading ----------------------------------------------------------------------------
    def _watched(self) -> None:
        """Pooled: readiness comes from our own poller while we wait on the client (only then)."""
        poller = self.server.poller
        if poller.conns.get(self.fd) is not self:
            poller.add(self)

    def _wait(self, mask: int, deadline: float) -> Any:
        """Wait for `mask` on the socket; True, or EXPIRED once `deadline` (0: none) has passed."""
        if self.pool is not None:
            self._watched()
        self.deadline = deadline
        self.waiting = mask
        events = _switch(self.hub)
        self.waiting = 0
        if events is EXPIRED:
            return EXPIRED
        self.ready_bits |= events
        return True

    def _receive(self, deadline: float) -> Any:
        """Read once and feed the parser: True; False at the end of the connection; or EXPIRED."""
        sock, buffer = self.sock, self.server.buffer
        while True:
            if self.ready_bits & READ_WAIT:
                self.ready_bits = 0
                if self.peeked < 0:
                    return self._peek_first()
                try:
                    n = sock.recv_into(buffer)
                except BlockingIOError:
                    n = -1
                except OSError:
                    return False
                if n >= 0:
                    break
            woke = self._wait(READ_WAIT, deadline)
            if woke is not True:
                return woke
        if n == 0:
            return False
        self.idle = False
        if n == READ_SIZE:  # more may be queued, and edge-triggered epoll will not say so again
            self.ready_bits |= IN
        self.parser.feed(self.server.view[:n])
        return True

    def _peek_first(self) -> Any:
        """The first read of a handed-over connection: peek at an idempotent request that came whole."""
        self.peeked = 0
        buffer = self.server.buffer
        try:
            n = self.sock.recv_into(buffer, 0, socket.MSG_PEEK)
        except BlockingIOError:
            self.peeked = -1
            return self._receive(self.deadline)
        except OSError:
            return False
        if n == READ_SIZE:  # more may be queued, and edge-triggered epoll will not say so again
            self.ready_bits |= IN
        if n and bytes(buffer[:min(n, 8)]).startswith(IDEMPOTENT):
            self.idle = False
            self.parser.feed(self.server.view[:n])
            ready = self.parser.ready
            self.peeked = n
            if not (ready and ready[0].complete):  # it needs more bytes: read it the ordinary way
                self._consume_peeked()
            return True
        self.ready_bits |= IN  # not retryable: read the same bytes for real
        return self._receive(self.deadline) if n else False

    def _consume_peeked(self) -> None:
        """Take what the parser already has out of the kernel's queue (it is all there)."""
        left, self.peeked = self.peeked, 0
        buffer = self.server.buffer
        while left > 0:
            try:
                got = self.sock.recv_into(buffer, min(left, len(buffer)))
            except OSError:
                return  # reset: the next send fails too
            if not got:
                return
            left -= got

    def receive_body(self, req: Request) -> None:
        """One more read for wsgi.input (after `100 Continue` if the client waits for it)."""
        if req.expect:
            req.expect = False
            if not self.head_sent:
                self._send(CONTINUE)
        parser = self.parser
        if parser.stopped:
            raise HttpError(parser.error or 400, parser.reason or "the request body is incomplete")
        timeout = self.server.limits.body_timeout
        woke = self._receive(_monotonic() + timeout if timeout else 0.0)
        if woke is EXPIRED:
            raise ClientGone("the request body stalled")  # closed quietly, as a late head is
        if woke is not True:
            raise ClientGone("the client closed the connection before the end of the body")

    # -- one exchange -----------------------------------------------------------------------
    def _serve(self, req: Request) -> bool:
        """Call the app for one request and send its answer; whether the connection goes on."""
        self.req, self.status, self.head_sent, self.hand_back = req, None, False, False
        server = self.server
        runtime = server.runtime
        began = _monotonic() if server.access_log else 0.0
        runtime.in_flight += 1
        slicer = runtime.slicer
        computing = slicer.enter(self.turn)  # app code may be sliced from here (master/worker/time_slice.py)
        try:
            result = server.app(req.environ, self._start_response)
            try:
                self._send_result(req, result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except ClientGone:
            return False
        except HttpError as exc:
            return self._failed(exc.status, exc.reason)
        except Exception:  # noqa: BLE001 - the app's error: a 500, and the worker goes on
            return self._app_error(req)
        finally:
            slicer.leave(computing)
            runtime.in_flight -= 1
            runtime.requests += 1
        if server.access_log:
            server.log_access(req.environ, self.status, _monotonic() - began)
        if not req.complete and self.parser.stopped:  # its body broke off, and the app answered: close
            return False
        if self.hand_back and self.keep and self.pool is None and not self.parser.ready \
                and self.parser.current is None:
            return not self._give_back()  # False: the balancer would not take it, so we go on
        return self.keep

    def _start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        if type(status) is not str or status[3:4] != " " or not status[:3].isdigit():
            raise ValueError(f"invalid WSGI status {status!r}")
        self.status, self.headers = status, headers
        return self._write

    def _send_result(self, req: Request, result: Any) -> None:
        if type(result) is list and len(result) == 1:  # the whole body at once: its length is known
            self._send_head(req, result[0], len(result[0]))
        else:
            for data in result:
                if data:
                    if self.head_sent:
                        self._send_body(data)
                    else:
                        self._send_head(req, data, -1)
            if not self.head_sent:
                self._send_head(req, b"", 0)
        if self.chunked:
            self._send(LAST_CHUNK)
        elif self.remaining > 0:
            self.keep = False  # shorter than its Content-Length: only the close tells the client

    def _write(self, data: bytes) -> None:
        """The write() callable start_response returns (PEP 3333's legacy interface)."""
        if not self.head_sent:
            self._send_head(self.req, data, -1)
        elif data:
            self._send_body(data)

    # -- the answer -------------------------------------------------------------------------
    def _send_head(self, req: Request, first: bytes, total: int) -> None:
        """Send the status line and headers, with the first body bytes in the same write."""
        if self.status is None:
            raise AssertionError("the app returned a body without calling start_response()")
        env = req.environ
        lines, length, app_close, _ = head_lines(self.status, self.headers)
        self.no_body = env["REQUEST_METHOD"] == "HEAD" or self.status.startswith(NO_BODY_STATUS)
        framed = self._frame(lines, length, total, env)
        draining = self.server.runtime.draining
        keep = (framed and req.keep_alive and not app_close
                and (not draining or self.server.runtime.balancer.takes_back_while_draining())
                and (req.complete or self._drop_body(req))
                and (self._drain_boundary() if draining else self._boundary()))
        if not keep:
            lines.append("Connection: close\r\n")
        elif env["SERVER_PROTOCOL"] == "HTTP/1.0":
            lines.append("Connection: keep-alive\r\n")
        self.keep = keep
        head = finish_head(lines)
        self.head_sent = True
        if self.no_body or not first:
            self._send(head)
            return
        if self.chunked:
            first = chunk(first)
        elif len(first) == self.remaining:  # the whole body at once (the usual case)
            self.remaining = 0
        else:
            first = self._within_length(first)
        if len(first) <= GATHER_MAX:
            self._send(head + first)
        else:
            self._send(head)
            self._send(first)

    def _frame(self, lines: list[str], length: str | None, total: int, env: dict) -> bool:
        """Choose the body's framing; False when only closing the connection can end the body."""
        self.chunked, self.remaining = False, -1
        if length is not None:
            if int(length) < 0:
                raise ValueError(f"invalid Content-Length {length!r}")
            if not self.no_body:
                self.remaining = int(length)
        elif total >= 0 and (not self.no_body or env["REQUEST_METHOD"] == "HEAD"):
            self.remaining = -1 if self.no_body else total
            lines.append(f"Content-Length: {total}\r\n")
        elif not self.no_body:
            if env["SERVER_PROTOCOL"] != "HTTP/1.1":
                return False
            self.chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
        return True

    def _drop_body(self, req: Request) -> bool:
        """The app left some of the body unread: drop it and keep the connection, if that is cheap."""
        req.discard, req.body = True, None
        if req.expect or self.parser.stopped:  # the client waits for 100 Continue, or the body broke off
            return False
        return req.length > 0 and req.length - req.received <= DISCARD_MAX

    def _boundary(self) -> bool:
        """Ask the balancer (master/worker/balance.py) whether this connection goes on here.

        While this worker has lately served requests that compute (so a request may wait behind
        one here while another worker is free), a kept connection goes into the keep-alive pool
        instead (master/core/pool.py): handed back to the primary once, re-armed in the set once
        pooled. Otherwise it stays, as it would without the pool: that costs nothing per request.
        A computing client's connection stays too: its requests are the ones others should not
        wait behind, and time slices already let the others pass them here.
        """
        if self.server.pooling_now() and not computing_client(self.turn) or (
                self.pool is not None and not self.pool.keeps(self)):
            self.hand_back = True
            return True
        verdict = self.server.runtime.balancer.at_boundary()
        if verdict == KEEP:
            return True
        self.hand_back = verdict == HAND_BACK
        return self.hand_back

    def _drain_boundary(self) -> bool:
        """Draining, and the primary takes connections back: this one goes back once answered."""
        self.hand_back = True
        return True

    def _within_length(self, data: bytes) -> bytes:
        remaining = self.remaining
        if remaining < 0 or self.no_body:
            return data
        if len(data) > remaining:  # more than its Content-Length: cut, and close after
            data, self.keep = data[:remaining], False
        self.remaining = remaining - len(data)
        return data

    def _send_body(self, data: bytes) -> None:
        if self.no_body:
            return
        if self.chunked:
            self._send(chunk(data))
        else:
            data = self._within_length(data)
            if data:
                self._send(data)

    def _give_back(self) -> bool:
        """Pass the idle connection to the balancer (master/worker/balance.py); True if it took it.

        Not while bytes of a next request may be queued: those are ours to serve.
        """
        parser = self.parser
        if self.ready_bits & READ_WAIT or parser.ready or parser.current is not None or parser.in_head:
            return False
        poller = self.server.poller
        poller.remove(self)
        if self.server.runtime.balancer.hand_back(self.sock, self.peer):
            self.handed = True
            return True
        poller.add(self)
        return False

    # -- writing ----------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self.peeked > 0:  # the answer starts: from here on the request can no longer be retried
            self._consume_peeked()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise ClientGone("the client reset the connection") from None
        if sent != len(data):
            self._send_rest(memoryview(data), sent)

    def _send_rest(self, data: memoryview, sent: int) -> None:
        if not self.writes_watched:
            self.writes_watched = True
            if self.pool is not None:
                self._watched()
            self.server.poller.watch_writes(self)
        timeout = self.server.limits.body_timeout  # a client that stops reading stalls like one that stops sending
        while sent < len(data):
            if self._wait(WRITE_WAIT, _monotonic() + timeout if timeout else 0.0) is not True:
                raise ClientGone("the client stopped reading")
            try:
                sent += self.sock.send(data[sent:])
            except BlockingIOError:
                pass
            except OSError:
                raise ClientGone("the client reset the connection") from None

    # -- errors -----------------------------------------------------------------------------
    def _app_error(self, req: Request) -> bool:
        traceback.print_exc(file=sys.stderr)
        if not self.head_sent:
            self._refuse(500, "the application failed")
        return False

    def _failed(self, status: int, reason: str) -> bool:
        if not self.head_sent:
            self._refuse(status, reason)
        return False

    def _refuse(self, status: int, reason: str) -> None:
        """Answer an error, then close gently."""
        self.parser.fail(status, reason)
        try:
            self._send(error_response(status, reason, date_line()))
        except ClientGone:
            return
        self._linger()

    def _linger(self) -> None:
        """Stop sending, then read and drop what the client still sends, for a moment.

        Closing with unread bytes would send a reset, which can destroy the error answer
        before the client has read it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline, left, buffer = _monotonic() + LINGER_SECONDS, LINGER_BYTES, self.server.buffer
        while left > 0:
            if self.ready_bits & READ_WAIT:
                self.ready_bits = 0
                try:
                    n = self.sock.recv_into(buffer)
                except BlockingIOError:
                    n = -1
                except OSError:
                    return
                if n == 0:
                    return
                left -= max(n, 0)
                if n > 0:
                    continue
            if self._wait(READ_WAIT, deadline) is not True:
                return
