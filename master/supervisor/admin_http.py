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
from collections.abc import Callable
from typing import Any

import httptools

from ..core.net import ListenError, bind_socket, parse_bind
from .exchanges import ExchangeServer

log = logging.getLogger("master.admin")

MAX_CONNECTIONS = 64
EXCHANGE_TIMEOUT = 5.0
MAX_HEAD = 8 * 1024
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
    """One connection's request: its parser, and from its callbacks the URL and whether the head is complete."""

    def __init__(self) -> None:
        self.url = b""
        self.complete = False
        self.received = 0
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.complete = True


class AdminServer(ExchangeServer):
    """Serves registered GET routes on `bind` from the master's loop."""

    name = "admin endpoint"

    def __init__(self, bind: str, loop: Any) -> None:
        super().__init__(loop, MAX_CONNECTIONS, EXCHANGE_TIMEOUT)
        self.bind = bind
        self.routes: dict[str, Handler] = {}
        self.query_routes: set[str] = set()

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
            sock = bind_socket(host, port, backlog=128)
        except ListenError as exc:
            log.warning("metrics disabled: %s", exc.strerror)
            return False
        self.max_connections = connection_cap()
        self.serve(sock)
        return True

    # -- one exchange -----------------------------------------------------------------------
    def new_state(self, conn: socket.socket) -> _Request:
        return _Request()

    def on_data(self, request: _Request, data: bytes) -> bytes | None:
        if not data:
            return b""  # gone before its head was complete: nothing to answer
        request.received += len(data)
        if request.received > MAX_HEAD:
            return _render((431, "text/plain", b"request head too large\n"))
        try:
            request.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            request.complete = True
        except httptools.HttpParserError:
            return _render((400, "text/plain", b"bad request\n"))
        return _render(self._answer(request)) if request.complete else None

    def _answer(self, request: _Request) -> Response:
        if request.parser.get_method() != b"GET":
            return 405, "text/plain", b"only GET\n"
        path, _, query = request.url.decode("latin-1").partition("?")
        handler = self.routes.get(path)
        if handler is None:
            return 404, "text/plain", b"not found: try " + ", ".join(sorted(self.routes)).encode() + b"\n"
        try:
            return handler(query) if path in self.query_routes else handler()
        except Exception:
            log.exception("admin handler for %s failed", path)
            return 500, "text/plain", b"internal error\n"


def _render(response: Response) -> bytes:
    status, content_type, body = response
    body = body[:MAX_RESPONSE]
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body
