"""The transport limits, as the pywsgi engine applies them (server.py wires them into its handler).

- TimedReader: every read of a connection is bounded by the phase it is in. A new
  connection has header_timeout to deliver its whole first request head; between
  requests, an idle keep-alive connection may wait keepalive_timeout for the next one to
  begin, which then has header_timeout for its head; a body may stall body_timeout between
  two reads. One deadline per head, not one per read: a client trickling a byte every few
  seconds still runs out of time.
- read_header_lines: the head (request line + fields) is read line by line against a byte
  budget and a field count, so a 5 MB header block costs at most max_header_bytes before
  the 431, instead of pywsgi's 100 lines of 64 KiB each.
- check_framing: only one unambiguous way to find the body's end (RFC 9112 6.3): digits-only
  Content-Length, at most one value of it, Transfer-Encoding exactly "chunked", never both.
- BoundedInput: a chunked body stops at max_body_bytes; after the response, at most
  DISCARD_MAX unread body bytes are read to keep the connection, past that it closes.
- Refusal: a request refused before the app runs; its response is sent, then the
  connection closes after a short, bounded linger (so the client reads the status rather
  than a reset while it is still sending).
"""
from __future__ import annotations

import email.parser
import io
import socket
import time
from typing import Any

from gevent.pywsgi import Input, OldMessage, _InvalidClientInput

from ..core.settings import WorkerSettings

DISCARD_MAX = 64 * 1024  # unread body bytes worth reading to keep a connection
LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024
PYWSGI_MAX_LINE = 8190  # pywsgi answers 414 itself at 8192 bytes, whatever we allow
REASONS = {400: "Bad Request", 413: "Content Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large"}


class Refusal(Exception):
    """A request refused before the app sees it; `response` is the whole answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        body = (detail + "\n").encode("latin-1", "replace")
        self.response = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: text/plain\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1") + body


class BodyTooLarge(_InvalidClientInput):
    """A chunked body past max_body_bytes (pywsgi closes the connection after one of these)."""


class BodyStalled(_InvalidClientInput):
    """The body stopped arriving for body_timeout: a client error, so pywsgi answers 400 and closes."""


def seconds(value: float) -> float | None:
    """A limit in seconds as a socket timeout: 0 means no limit."""
    return value if value > 0 else None


class TimedReader(io.RawIOBase):
    """The raw reads under a handler's buffered rfile, and the deadlines of the phase it is in.

    Reads and writes carry no socket timeout: in gevent each timed wait arms and disarms a
    timer, a real cost on every keep-alive request. Instead the server's sweeper
    (ClusterServer._sweep) asks overdue() a few times a second and shuts an overdue
    connection down; the read or write blocked on it then fails with the reason recorded
    in `expired`. A limit is kept to within one sweep interval.
    """

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self.sock = sock
        self.deadline: float | None = None  # the head's: absolute, for all its reads together
        self.idle_deadline: float | None = None  # keep-alive: when the next request must have begun
        self.stall: float | None = None  # the body's: how long one read may wait
        self.send_stall: float | None = None  # how long one write may wait for the client to read
        self.reading_since: float | None = None  # a body read is waiting, since
        self.sending_since: float | None = None  # a write is waiting, since
        self.expired: str | None = None  # set by the sweeper: which limit cut this connection
        self._head_timeout = 0.0  # keep-alive: the head's timeout, once the next request begins
        self.head_begun = False  # bytes of the current head have arrived (a drain gives it time)
        self.in_head = False

    def readable(self) -> bool:
        return True

    def expect_head(self, timeout: float, since: float | None = None) -> None:
        """A head must be complete within `timeout` of `since` (default now); 0: no limit."""
        self.idle_deadline, self.stall, self.head_begun, self.in_head = None, None, False, True
        self.deadline = (since or time.monotonic()) + timeout if timeout > 0 else None

    def expect_next_request(self, idle: float, head: float) -> None:
        """Keep-alive: the next request may take `idle` to begin, then has `head` for its head."""
        self.expect_head(head)
        self.deadline = None
        self.idle_deadline = time.monotonic() + idle if idle > 0 else None
        self._head_timeout = head

    def expect_body(self, stall: float) -> None:
        """From here on each read may wait up to `stall` (0: no limit)."""
        self.deadline, self.idle_deadline, self.stall, self.in_head = None, None, seconds(stall), False

    def overdue(self, now: float) -> str | None:
        """Which limit this connection has run past at `now`, if any."""
        if self.idle_deadline is not None:
            return "keep-alive" if now >= self.idle_deadline else None
        if self.deadline is not None and now >= self.deadline:
            return "head"
        if self.reading_since is not None and self.stall is not None and now - self.reading_since >= self.stall:
            return "body"
        if self.sending_since is not None and self.send_stall is not None and now - self.sending_since >= self.send_stall:
            return "send"
        return None

    def readinto(self, buffer: Any) -> int:
        if self.expired is None:
            waiting_to_begin = self.idle_deadline is not None
            if self.stall is not None:
                self.reading_since = time.monotonic()
            try:
                count = self.sock.recv_into(buffer)
            except BlockingIOError:
                return None  # a look that must not wait (the balancer's peek): nothing yet, as SocketIO says
            finally:
                self.reading_since = None
            if self.expired is None:
                if waiting_to_begin and count:  # the next request began: its head's clock starts now
                    self.expect_head(self._head_timeout)
                if count and self.in_head:
                    self.head_begun = True
                return count
        if self.expired == "body":  # pywsgi reads again to discard the rest: it fails at once too
            raise BodyStalled(f"request body stalled for {self.stall:.0f} s")
        raise socket.timeout(f"{self.expired} timeout")


def request_line_limit(settings: WorkerSettings) -> int:
    """The longest request line accepted (without its CRLF); longer is a 414."""
    limits = [n for n in (settings.limit_request_line, settings.max_header_bytes) if n > 0]
    return min(limits + [PYWSGI_MAX_LINE])


def read_request_line(rfile: Any, limit: int) -> bytes:
    """One request line, at most `limit` bytes (request_line_limit()); Refusal(414) past it."""
    line = rfile.readline(limit + 3)  # room for CRLF, and one byte to tell "too long"
    if len(line.rstrip(b"\r\n")) > limit:
        raise Refusal(414, f"request line longer than {limit} bytes")
    return line


def read_header_lines(rfile: Any, budget: int | None, max_fields: int) -> list[bytes]:
    """Header lines up to the blank line; Refusal(431) past `budget` bytes or `max_fields` fields."""
    lines: list[bytes] = []
    while True:
        line = rfile.readline(65537 if budget is None else budget + 1)
        if budget is not None:
            if len(line) > budget:
                raise Refusal(431, "request header block too large")
            budget -= len(line)
        if not line:
            raise ConnectionAbortedError("the client closed the connection inside a request head")
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line)
        if max_fields and len(lines) > max_fields:
            raise Refusal(431, f"more than {max_fields} header fields")


def parse_header_lines(lines: list[bytes]) -> Any:
    """The header lines as pywsgi's message class (what http.client.parse_headers builds)."""
    return email.parser.Parser(_class=OldMessage).parsestr(b"".join(lines).decode("iso-8859-1"))


FRAMING_FIELDS = (b"content-length:", b"transfer-encoding:")


def names_framing(lines: list[bytes]) -> bool:
    """Whether any field is Content-Length or Transfer-Encoding (most requests have neither)."""
    return any(line[:1] in b"CcTt" and line[:18].lower().startswith(FRAMING_FIELDS) for line in lines)


def check_framing(headers: Any) -> None:
    """One unambiguous body length, or Refusal(400): what request smuggling lives on."""
    lengths = headers.get_all("content-length") or []
    encodings = headers.get_all("transfer-encoding") or []
    if lengths and encodings:
        raise Refusal(400, "both Content-Length and Transfer-Encoding")
    if any(not value.strip().isdigit() or not value.strip().isascii() for value in lengths):
        raise Refusal(400, "Content-Length must be digits")
    if len({value.strip().lstrip("0") for value in lengths}) > 1:
        raise Refusal(400, "conflicting Content-Length values")
    if encodings and (len(encodings) > 1 or encodings[0].strip().lower() != "chunked"):
        raise Refusal(400, "unsupported Transfer-Encoding (only chunked)")


class BoundedInput(Input):
    """pywsgi's request body, capped for chunked bodies, with a bounded discard after the response."""

    __slots__ = ("limit", "left_unread", "total", "over_limit")

    def __init__(self, other: Input, limit: int) -> None:
        super().__init__(other.rfile, other.content_length, socket=other.socket, chunked_input=other.chunked_input)
        self.limit = limit
        self.total = 0
        self.left_unread = False  # the connection must close: its body was not read to the end
        self.over_limit = False  # a chunked body went past the limit (the answer is a 413)

    def read(self, length: int | None = None) -> bytes:
        data = super().read(length)
        self._count(data)
        return data

    def readline(self, size: int | None = None) -> bytes:
        data = super().readline(size)
        self._count(data)
        return data

    def _count(self, data: bytes) -> None:
        self.total += len(data)
        if self.chunked_input and self.limit and self.total > self.limit:
            self._chunked_input_error = True  # pywsgi then neither discards nor reuses the connection
            self.over_limit = True
            raise BodyTooLarge(f"chunked request body larger than {self.limit} bytes")

    def _discard(self) -> None:
        if self._chunked_input_error or not (self.chunked_input or self.position < (self.content_length or 0)):
            return
        if not self.chunked_input and (self.content_length or 0) - self.position > DISCARD_MAX:
            self.left_unread = True  # e.g. the app's own 413: never read 100 MB to throw it away
            return
        start = self.total
        while True:
            if self.total - start > DISCARD_MAX:
                self.left_unread = True
                return
            if not self.read(16384):
                return


def linger(sock: Any) -> None:
    """After a refusal: stop sending, read (and drop) what the client still sends, briefly."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        received = 0
        while received < LINGER_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                return
            received += len(chunk)
    except OSError:
        pass
