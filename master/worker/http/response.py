"""Response heads: the app's status and headers as bytes, with the framing the engine owns.

The engine decides how a body is framed and whether the connection stays open, so the app's
hop-by-hop headers (RFC 9110 7.6.1) are not passed on, except that `Connection: close`
from the app closes the connection after the response. A head is validated once it is
joined: a CR or LF inside a status or header (response splitting) is a 500, never sent.
"""
from __future__ import annotations

import time
from email.utils import formatdate

GATHER_MAX = 64 * 1024  # a first body chunk up to this goes out in the head's write
HOP_BY_HOP = frozenset(("transfer-encoding", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"))
NO_BODY_STATUS = ("1", "204", "304")  # status prefixes whose responses have no body
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_date = [0, ""]  # [second, "Date: ...\r\n"]: formatted once per second


def date_line() -> str:
    """The Date header line for now (RFC 9110 6.6.1: an origin server with a clock sends it)."""
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, f"Date: {formatdate(now, usegmt=True)}\r\n"
    return _date[1]


PLAIN, LENGTH, CONNECTION, CHUNKED_TE, DROPPED = range(5)
_KINDS: dict[str, int] = {}  # a header name as the app spells it -> what the engine does with it
_KINDS_MAX = 1024


def _kind(name: str) -> int:
    lower = name.lower()
    kind = (LENGTH if lower == "content-length" else CONNECTION if lower == "connection"
            else CHUNKED_TE if lower == "transfer-encoding" else DROPPED if lower in HOP_BY_HOP else PLAIN)
    if len(_KINDS) < _KINDS_MAX:
        _KINDS[name] = kind
    return kind


def head_lines(status: str, headers: list) -> tuple[list[str], str | None, bool, bool]:
    """The status line and the app's end-to-end headers, one CRLF-terminated string each.

    Also returns the app's Content-Length (None if it gave none), whether it said
    `Connection: close`, and whether it asked for chunked transfer coding.
    """
    lines = ["HTTP/1.1 " + status + "\r\n"]
    length, close, chunked = None, False, False
    for name, value in headers:
        kind = _KINDS.get(name)
        if kind is None:
            kind = _kind(name)
        if kind:
            if kind == LENGTH:
                length = value
            elif kind == CONNECTION:
                close = close or "close" in value.lower()
                continue
            else:
                chunked = chunked or (kind == CHUNKED_TE and value.lower() == "chunked")
                continue
        lines.append(f"{name}: {value}\r\n")
    return lines, length, close, chunked


def finish_head(lines: list[str]) -> bytes:
    """Add Date and the blank line, join, check that no value carried a CR or LF, encode."""
    now = int(time.time())
    lines.append(_date[1] if now == _date[0] else date_line())
    lines.append("\r\n")
    head = "".join(lines)
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise ValueError("a CR or LF inside the status or a header (response splitting)")
    return head.encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)
