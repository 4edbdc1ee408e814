"""The master's own HTTP endpoint (METRICS_BIND): /metrics, /ready, and whatever else registers.

It runs in the master's event loop, never in threads of its own, and every cost is bounded:
at most MAX_CONNECTIONS open at once (fewer under a low descriptor limit: a quarter of the
descriptors free at start-up, so the control socket and worker spawns always find some;
past that, new ones wait in the kernel's backlog),
a whole exchange within EXCHANGE_TIMEOUT, a request head of at most MAX_HEAD bytes, one
request per connection. Requests are parsed by httptools (llhttp, Node's parser): a client
that sends anything it cannot parse gets a 400 and is closed. A handler returns
(status, content type, body); one that raises is logged once and answers 500.
"""
from __future__ import annotations

import logging
import os
import resource
import socket
from typing import Any, Callable

import httptools

from ..core.net import ListenError, bind_socket, parse_bind

log = logging.getLogger("master.admin")

MAX_CONNECTIONS = 64
EXCHANGE_TIMEOUT = 5.0
MAX_HEAD = 8 * 1024
ACCEPT_RETRY = 0.5  # seconds to wait after EMFILE before accepting again
MAX_RESPONSE = 16 * 1024 * 1024
Response = tuple[int, str, bytes]
Handler = Callable[..., Response]  # () -> Response, or (query string) -> Response with route(query=True)
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


def connection_cap() -> int:
    """MAX_CONNECTIONS, or a quarter of the descriptors free now if that is fewer (at least 4)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, (soft - in_use) // 4))


class _Request:
    """httptools callbacks: just the URL and whether the head is complete."""

    def __init__(self) -> None:
        self.url = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.complete = True


class _Exchange:
    """One connection: read a request head, write one response, close."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request = _Request()
        self.parser = httptools.HttpRequestParser(self.request)
        self.received = 0
        self.out = b""
        self.timer: Any = None


class AdminServer:
    """Serves registered GET routes on `bind` from the master's loop."""

    def __init__(self, bind: str, loop: Any) -> None:
        self.bind = bind
        self.loop = loop
        self.routes: dict[str, Handler] = {}
        self.query_routes: set[str] = set()
        self.sock: socket.socket | None = None
        self.exchanges: dict[int, _Exchange] = {}
        self._accepting = False
        self._retry: Any = None  # the timer that resumes accepting after EMFILE
        self.max_connections = MAX_CONNECTIONS

    @property
    def port(self) -> int | None:
        """The port it listens on (after start)."""
        return self.sock.getsockname()[1] if self.sock else None

    def route(self, path: str, handler: Handler, *, query: bool = False) -> None:
        """Answer GET `path` with `handler()`, or `handler(query_string)` when `query`."""
        self.routes[path] = handler
        if query:
            self.query_routes.add(path)

    def start(self) -> bool:
        """Listen; an address in use only disables this endpoint (the cluster still runs)."""
        host, port = parse_bind(self.bind)
        try:
            self.sock = bind_socket(host, port, backlog=128)
        except ListenError as exc:
            log.warning("metrics disabled: %s", exc.strerror)
            return False
        self.sock.setblocking(False)
        self.max_connections = connection_cap()
        self._set_accepting(True)
        return True

    def _set_accepting(self, wanted: bool) -> None:
        if self.sock is None or wanted == self._accepting:
            return
        self._accepting = wanted
        if wanted:
            self.loop.add_reader(self.sock.fileno(), self._on_accept)
        else:
            self.loop.remove_reader(self.sock.fileno())

    def _on_accept(self) -> None:
        while self.sock is not None and len(self.exchanges) < self.max_connections:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                break
            except OSError as exc:  # EMFILE, ENFILE: the listener stays readable, so pause rather than spin
                log.warning("admin endpoint: cannot accept (%s); retrying in %.1f s", exc.strerror, ACCEPT_RETRY)
                self._set_accepting(False)
                self._retry = self.loop.call_later(ACCEPT_RETRY, self._resume)
                return
            conn.setblocking(False)
            exchange = _Exchange(conn)
            self.exchanges[conn.fileno()] = exchange
            exchange.timer = self.loop.call_later(EXCHANGE_TIMEOUT, self._timed_out, conn.fileno(), exchange)
            self.loop.add_reader(conn.fileno(), lambda fd=conn.fileno(): self._on_readable(fd))
        # At the cap, leave the rest in the kernel's backlog until one finishes.
        self._set_accepting(len(self.exchanges) < self.max_connections)

    def _resume(self) -> None:
        self._retry = None
        self._set_accepting(len(self.exchanges) < self.max_connections)

    def _on_readable(self, fd: int) -> None:
        exchange = self.exchanges.get(fd)
        if exchange is None:
            return
        try:
            data = exchange.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._finish(fd)
            return
        exchange.received += len(data)
        if exchange.received > MAX_HEAD:
            self._respond(fd, (431, "text/plain", b"request head too large\n"))
            return
        try:
            exchange.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            exchange.request.complete = True
        except httptools.HttpParserError:
            self._respond(fd, (400, "text/plain", b"bad request\n"))
            return
        if exchange.request.complete:
            self._respond(fd, self._answer(exchange))

    def _answer(self, exchange: _Exchange) -> Response:
        if exchange.parser.get_method() != b"GET":
            return 405, "text/plain", b"only GET\n"
        path, _, query = exchange.request.url.decode("latin-1").partition("?")
        handler = self.routes.get(path)
        if handler is None:
            return 404, "text/plain", b"not found: try " + ", ".join(sorted(self.routes)).encode() + b"\n"
        try:
            return handler(query) if path in self.query_routes else handler()
        except Exception:  # noqa: BLE001 - a handler's bug must not stop the master
            log.exception("admin handler for %s failed", path)
            return 500, "text/plain", b"internal error\n"

    def _respond(self, fd: int, response: Response) -> None:
        exchange = self.exchanges[fd]
        status, content_type, body = response
        body = body[:MAX_RESPONSE]
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
        exchange.out = head.encode("latin-1") + body
        self.loop.remove_reader(fd)
        self._on_writable(fd)

    def _on_writable(self, fd: int) -> None:
        exchange = self.exchanges.get(fd)
        if exchange is None:
            return
        try:
            sent = exchange.sock.send(exchange.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._finish(fd)
            return
        exchange.out = exchange.out[sent:]
        if exchange.out:
            self.loop.add_writer(fd, lambda: self._on_writable(fd))
        else:
            self._finish(fd)

    def _timed_out(self, fd: int, exchange: _Exchange) -> None:
        if self.exchanges.get(fd) is exchange:
            self._finish(fd)

    def _finish(self, fd: int) -> None:
        exchange = self.exchanges.pop(fd, None)
        if exchange is None:
            return
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)
        if exchange.timer is not None:
            exchange.timer.cancel()
        exchange.sock.close()
        if self._retry is None:  # while paused after EMFILE, the retry timer resumes accepting
            self._set_accepting(True)

    def close(self) -> None:
        """Stop listening and drop every open exchange."""
        for fd in list(self.exchanges):
            self._finish(fd)
        if self.sock is not None:
            self._set_accepting(False)
            self.sock.close()
            self.sock = None
