"""What goes wrong on a connection, and the answer the client gets for it."""
from __future__ import annotations

from http import HTTPStatus


class HttpError(BaseException):
    """A request that cannot be served as sent: answered with `status`, then the connection closes.

    Raised from wsgi.input too (a body over the limit, broken chunked framing, a stalled
    body). It derives from BaseException so that an app's `except Exception` (Flask turns
    any Exception into a 500) lets it through to the engine, which answers with its status.
    """

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason or phrase(status)


class ClientGone(BaseException):
    """The client closed or reset the connection (or stopped reading): nothing more can be sent.

    Raised from wsgi.input when a body ends early, so an app never takes a truncated body for
    a whole one; a BaseException for the same reason as HttpError.
    """


def phrase(status: int) -> str:
    """The reason phrase of a status code ('Bad Request')."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(status: int, reason: str, date: str) -> bytes:
    """A complete, self-contained answer that ends the connection."""
    body = f"{status} {phrase(status)}: {reason}\n".encode("latin-1", "replace")
    head = (f"HTTP/1.1 {status} {phrase(status)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{date}\r\n")
    return head.encode("latin-1") + body
