"""wsgi.input: a request's body as the app reads it, pulled from the connection as needed.

Nothing is read ahead of the app: each read the body cannot answer from what the parser
already has asks the connection for one more read from the socket (sending `100 Continue`
first if the client waits for it). A body that ends early raises ClientGone, never a short
read an app could take for the whole body; broken framing, a body over the limit and a stall
raise HttpError, which the engine answers.
"""
from __future__ import annotations

from typing import Any, Iterator

from .parse import Request


class Body:
    """The body of one request (wsgi.input)."""

    __slots__ = ("conn", "req")

    def __init__(self, conn: Any, req: Request) -> None:
        self.conn = conn  # has receive_body(req): one more read, or an exception
        self.req = req

    def _fill(self, wanted: int) -> bytearray | None:
        """Read until `wanted` bytes are buffered (-1: all of them) or the body is complete."""
        req, receive = self.req, self.conn.receive_body
        while not req.complete and (wanted < 0 or req.body is None or len(req.body) < wanted):
            receive(req)
        return req.body

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left when size is None or negative); b"" at the end."""
        wanted = -1 if size is None or size < 0 else size
        buf = self._fill(wanted)
        if not buf:
            return b""
        if wanted < 0 or len(buf) <= wanted:
            self.req.body = None
            return bytes(buf)
        data = bytes(buf[:wanted])
        del buf[:wanted]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """One line (with its b"\\n"), at most `size` bytes."""
        limit = -1 if size is None or size < 0 else size
        req, receive = self.req, self.conn.receive_body
        while True:
            buf = req.body
            end = buf.find(b"\n") if buf else -1
            if end >= 0 and (limit < 0 or end < limit):
                return self.read(end + 1)
            if req.complete or (limit >= 0 and buf is not None and len(buf) >= limit):
                return self.read(limit)
            receive(req)

    def readlines(self, hint: int = -1) -> list[bytes]:
        """The remaining lines (stopping once `hint` bytes are read, if given)."""
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class NoBody:
    """wsgi.input of a request without a body (one shared instance: it holds no state)."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        """Always b"": the body is empty."""
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        """Always b"": the body is empty."""
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Always []: the body is empty."""
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


NO_BODY = NoBody()
