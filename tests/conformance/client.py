"""A raw HTTP/1.1 client for the conformance tests: bytes exactly as given, answers parsed by llhttp."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Response:
    """One parsed answer."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Client:
    """One connection; reads answers with a strict parser (what a proxy in front would see)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.done: list[Response] = []
        self._current = Response()
        self._parser = httptools.HttpResponseParser(self)
        self.eof = False

    # llhttp's callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers[name.decode().lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._current.status = self._parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        self._current.body += data

    def on_message_complete(self) -> None:
        self.done.append(self._current)
        self._current = Response()

    def send(self, data: bytes) -> "Client":
        self.sock.sendall(data)
        return self

    def responses(self, count: int, timeout: float = 5.0) -> list[Response]:
        """Read until `count` answers are complete (fewer if the server closes first)."""
        deadline = time.monotonic() + timeout
        while len(self.done) < count and not self.eof:
            data = self._recv(deadline)
            if data is None:
                break
            if not data:
                self.eof = True
                try:
                    self._parser.feed_data(b"")
                except httptools.HttpParserError:
                    pass
                break
            self._parser.feed_data(data)
        got, self.done = self.done[:count], self.done[count:]
        return got

    def response(self, timeout: float = 5.0) -> Response | None:
        got = self.responses(1, timeout)
        return got[0] if got else None

    def _recv(self, deadline: float) -> bytes | None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self.sock.settimeout(left)
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return b""

    def raw(self, timeout: float = 2.0) -> bytes:
        """Everything the server sends until it closes or `timeout` passes."""
        deadline, data = time.monotonic() + timeout, b""
        while True:
            chunk = self._recv(deadline)
            if not chunk:
                self.eof = chunk == b""
                return data
            data += chunk

    def closed(self, timeout: float = 3.0) -> bool:
        """Whether the server ends the connection within `timeout` (sending nothing more)."""
        if self.eof:
            return True
        data = self._recv(time.monotonic() + timeout)
        return data == b""

    def close(self) -> None:
        self.sock.close()


def request(method: str = "GET", target: str = "/", headers: tuple = (), body: bytes = b"",
            version: str = "HTTP/1.1", host: str | None = "t") -> bytes:
    """A request's bytes, exactly as given (add Content-Length yourself)."""
    lines = [f"{method} {target} {version}"] + ([f"Host: {host}"] if host is not None else []) + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
