"""llhttp's callbacks turned into WSGI environs: one connection's requests, in order, within limits.

httptools never pauses: one feed() parses every request in the bytes it is given, so pipelined
requests queue up in `ready` (each with its head complete and its body as far as it arrived)
and the connection serves them oldest first. Limits apply while the bytes arrive, so an
oversized head costs at most one read's worth of memory before it is refused.

Framing is llhttp's strict mode (RFC 9112): it already refuses Content-Length with
Transfer-Encoding, a repeated or non-numeric Content-Length, obs-fold, bare LF or CR,
whitespace before a colon, and a Transfer-Encoding whose last coding is not chunked. Added
here: two Host fields, a missing Host in HTTP/1.1, Transfer-Encoding in HTTP/1.0, codings
other than chunked (501), versions other than 1.0 and 1.1 (505), and the size limits.
The first error stops the parser: requests already queued are served, then the error is
answered and the connection closes.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

import httptools

from .errors import phrase
from .limits import Limits

READ_SIZE = 64 * 1024  # one read; an unfinished head may overshoot its limit by this much before it is refused
METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE")}
_KEYS: dict[bytes, str] = {}  # header name as sent -> environ key ("" for a name that is dropped)
_KEYS_MAX = 2048  # distinct spellings remembered; past this, keys are computed each time
_LONGEST_METHOD = 16  # method, two spaces and "HTTP/1.1" fit in this many bytes besides the target


def header_key(name: bytes) -> str:
    """The environ key for a header name ("HTTP_X_FOO"); "" for a name with '_' (dropped).

    Dropped as gunicorn and nginx do: "X_Foo" and "X-Foo" would both become HTTP_X_FOO, so a
    client could forge a header a proxy in front had set or stripped.
    """
    text = name.decode("latin-1").upper()
    if "_" in text:
        key = ""
    elif text in ("CONTENT-TYPE", "CONTENT-LENGTH"):
        key = text.replace("-", "_")
    else:
        key = "HTTP_" + text.replace("-", "_")
    if len(_KEYS) < _KEYS_MAX:
        _KEYS[name] = key
    return key


class Reject(Exception):
    """Raised in a parser callback to stop llhttp (the status is already recorded)."""


class Request:
    """One request: its environ, and where its body stands.

    No __slots__: most requests never change most fields, so they stay the class's defaults and
    a request costs two stores instead of eleven.
    """

    length = 0  # the declared body length; -1: chunked
    received = 0  # body bytes parsed so far
    body: bytearray | None = None  # parsed body bytes the app has not read yet
    complete = False  # llhttp saw the end of the message
    keep_alive = False
    expect = False  # Expect: 100-continue, not answered yet
    discard = False  # the app is done with it: the rest of the body is dropped

    def __init__(self, environ: dict, url: bytes) -> None:
        self.environ = environ
        self.url = url


class RequestParser:
    """Feeds one connection's bytes to llhttp; `ready` holds requests whose head is complete."""

    __slots__ = ("_parser", "_feed", "template", "make_input", "ready", "current", "in_head", "head_fed",
                 "error", "reason", "stopped", "_line", "_fields", "_head", "_body", "_count", "_size")

    def __init__(self, template: dict, limits: Limits, make_input: Callable[[Request], Any]) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._feed = self._parser.feed_data
        self.template = template  # the connection's environ, copied for each request
        self.make_input = make_input  # wsgi.input for a request with a body
        self.ready: deque[Request] = deque()
        self.current: Request | None = None  # the request llhttp is in (head or body)
        self.in_head = False  # a head has begun and is not complete
        self.head_fed = 0  # bytes fed since that head began (a bound on an unfinished head)
        self._count = self._size = 0  # that head's fields and bytes so far
        self.error = 0  # the status that answers the first framing error; the parser is dead
        self.reason = ""
        self.stopped = False  # no more requests: an error, or an upgrade (what follows is not HTTP/1.1)
        self._line, self._fields = limits.request_line, limits.header_fields
        self._head, self._body = limits.header_bytes, limits.body_bytes

    def feed(self, data: Any) -> None:
        """Parse `data` (new requests go to `ready`, body bytes to their request)."""
        if self.stopped:
            return
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            self._upgraded()
        except httptools.HttpParserError as exc:
            self._failed(exc)
        else:
            if self.in_head:
                self.head_fed += len(data)
                if self.head_fed > self._head + READ_SIZE:
                    self.fail(431, "request header block too large")

    def fail(self, status: int, reason: str) -> None:
        """Stop parsing; `status` answers once the requests already queued are served."""
        if not self.error:
            self.error, self.reason = status, reason
        self.stopped = True

    def _upgraded(self) -> None:
        # Upgrade or CONNECT: served as a plain request (a WSGI app cannot take the socket over),
        # and the connection closes after it, since what follows is another protocol.
        self.stopped = True
        if self.ready:
            self.ready[-1].keep_alive = False

    def _failed(self, exc: Exception) -> None:
        if self.error:  # our own callback refused it
            self.stopped = True
            return
        text = str(exc) or phrase(400)
        self.fail(505 if "HTTP version" in text else 413 if "Content-Length overflow" in text else 400, text)

    def _reject(self, status: int, reason: str) -> None:
        self.fail(status, reason)
        raise Reject(reason)

    # -- llhttp's callbacks ---------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        """The request target (maybe in pieces): a request begins."""
        req = self.current
        if req is None:
            req = self.current = Request(self.template.copy(), url)
            self.in_head, self.head_fed, self._count, self._size = True, 0, 0, len(url)
        else:
            req.url += url
            self._size += len(url)
        if len(req.url) + _LONGEST_METHOD > self._line and self._line_too_long(req.url):
            self._reject(414, "request line too long")

    def _line_too_long(self, url: bytes) -> bool:
        return len(self._parser.get_method()) + len(url) + len(" HTTP/1.1 ") > self._line

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header field: into the environ, as HTTP_NAME."""
        self._count += 1
        self._size += len(name) + len(value) + 4
        if self._count > self._fields or self._size > self._head:
            self._reject(431, "too many header fields" if self._count > self._fields else
                         "request header block too large")
        key = _KEYS.get(name)
        if key is None:
            key = header_key(name)
        if key:
            env = self.current.environ
            if key in env:
                self._repeated(env, key, value)
            else:
                env[key] = value.rstrip(b" \t").decode("latin-1")

    def _repeated(self, env: dict, key: str, value: bytes) -> None:
        if key == "HTTP_HOST":
            self._reject(400, "more than one Host field")
        joiner = "; " if key == "HTTP_COOKIE" else ","
        env[key] += joiner + value.rstrip(b" \t").decode("latin-1")

    def on_headers_complete(self) -> None:
        """The head is complete: finish the environ and queue the request."""
        req = self.current
        env = req.environ
        parser = self._parser
        self.in_head = False
        keep_alive = parser.should_keep_alive()
        if keep_alive and "HTTP_CONNECTION" not in env:
            version = "1.1"  # llhttp keeps HTTP/1.0 (or 0.9, 2.0) alive only when the request asks to
        else:
            version = parser.get_http_version()
            if version != "1.1":
                self._old_version(env, version)
        method = parser.get_method()
        env["REQUEST_METHOD"] = METHODS.get(method) or self._rare_method(method)
        url = req.url
        if url[:1] == b"/" and b"?" not in url and b"%" not in url:
            env["PATH_INFO"] = url.decode("latin-1")
        else:
            self._target(env, url)
        if "HTTP_HOST" not in env and version == "1.1":
            self._reject(400, "HTTP/1.1 request without a Host field")
        if "CONTENT_LENGTH" in env or "HTTP_TRANSFER_ENCODING" in env:
            self._framing(req, env)
        if "HTTP_EXPECT" in env:
            self._expect(req, env)
        req.keep_alive = keep_alive
        self.ready.append(req)

    def _old_version(self, env: dict, version: str) -> None:
        if version != "1.0":
            self._reject(505, f"HTTP/{version} is not served (HTTP/1.1 and 1.0 are)")
        env["SERVER_PROTOCOL"] = "HTTP/1.0"

    def _rare_method(self, method: bytes) -> str:
        if method == b"CONNECT":
            self._reject(501, "CONNECT is not served")
        return method.decode("ascii")

    def _target(self, env: dict, url: bytes) -> None:
        if url[:1] != b"/":
            url = self._origin_form(url)
        path, query = url, b""
        if b"?" in url:
            path, _, query = url.partition(b"?")
            env["QUERY_STRING"] = query.decode("latin-1")
        if b"%" in path:
            path = unquote_to_bytes(path)
        env["PATH_INFO"] = path.decode("latin-1")

    def _origin_form(self, url: bytes) -> bytes:
        """An absolute-form target ("http://host/path?q") as its path and query; "*" as it is."""
        if url == b"*":
            return url
        try:
            parts = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            self._reject(400, "invalid request target")
        if not parts.schema:
            self._reject(400, "invalid request target")
        path = parts.path or b"/"
        return path + b"?" + parts.query if parts.query else path

    def _framing(self, req: Request, env: dict) -> None:
        coding = env.get("HTTP_TRANSFER_ENCODING")
        if coding is not None:
            if env["SERVER_PROTOCOL"] != "HTTP/1.1":
                self._reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            if coding.lower() != "chunked":  # (RFC 9112 allows 501; 400 as the pywsgi engine answers)
                self._reject(400, f"transfer coding {coding!r} is not served (only chunked)")
            req.length = -1
        else:
            req.length = int(env["CONTENT_LENGTH"])  # llhttp let only digits through
            if req.length > self._body:
                self._reject(413, f"request body over {self._body} bytes")
            env["CONTENT_LENGTH"] = str(req.length)
            if not req.length:
                return
        env["wsgi.input"] = self.make_input(req)

    def _expect(self, req: Request, env: dict) -> None:
        if env["HTTP_EXPECT"].lower() != "100-continue":
            self._reject(417, "the only expectation served is 100-continue")
        req.expect = req.length != 0 and env["SERVER_PROTOCOL"] == "HTTP/1.1"

    def on_body(self, data: bytes) -> None:
        """Body bytes of the current request."""
        req = self.current
        req.received += len(data)
        if req.received > self._body:
            self._reject(413, f"request body over {self._body} bytes")
        if req.discard:
            return
        if req.body is None:
            req.body = bytearray(data)
        else:
            req.body += data

    def on_message_complete(self) -> None:
        """The end of the current request's body."""
        self.current.complete = True
        self.current = None
