"""Request-smuggling probes (CL.TE, TE.CL, TE.TE obfuscations, CL.CL, chunk framing), after the lists
of PortSwigger's HTTP Request Smuggler and defparam's smuggler.py.

Each probe is one ambiguous POST /echo whose body, read the other way, hides a second request,
`GET /smuggled`. A server is safe when it refuses the ambiguous message (4xx/5xx, then closes)
or frames it the only way the RFC allows; it is desynchronised when it answers /smuggled.

`python -m tests.conformance.probes` runs every probe against both engines and prints the
table that docs/HTTP.md shows.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # run as a script: the suite's modules are imported from tests/, as pytest does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.client import Client  # noqa: E402

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
_CHUNKED = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)  # one chunk holding the hidden request
_SIZE_LINE = b"%x\r\n" % len(SMUGGLED)


def _post(headers: list[bytes], body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /echo " + version + b"\r\nHost: t\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def _te_cl(te_header: bytes) -> bytes:
    """TE.CL shape: a server framing by Content-Length stops after the chunk-size line."""
    return _post([b"Content-Length: %d" % len(_SIZE_LINE), te_header], _CHUNKED)


def _cl_te(te_header: bytes) -> bytes:
    """CL.TE shape: a server framing by chunks stops at the last chunk, before the hidden request."""
    body = b"0\r\n\r\n" + SMUGGLED
    return _post([b"Content-Length: %d" % len(body), te_header], body)


REJECT, BY_LENGTH = "rejected", "framed by Content-Length"

# (name, what it probes, the bytes, the safe outcome httptools must show)
PROBES: list[tuple[str, str, bytes, str]] = [
    ("CL.TE", "Content-Length, then Transfer-Encoding: chunked", _cl_te(b"Transfer-Encoding: chunked"), REJECT),
    ("TE.CL", "Transfer-Encoding: chunked, then Content-Length",
     _post([b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(_SIZE_LINE)], _CHUNKED), REJECT),
    ("TE.TE xchunked", "Transfer-Encoding: xchunked", _te_cl(b"Transfer-Encoding: xchunked"), REJECT),
    ("TE.TE space before colon", "Transfer-Encoding : chunked", _te_cl(b"Transfer-Encoding : chunked"), REJECT),
    ("TE.TE tab value", "Transfer-Encoding:<TAB>chunked", _te_cl(b"Transfer-Encoding:\tchunked"), REJECT),
    ("TE.TE two fields", "Transfer-Encoding: chunked + Transfer-Encoding: x",
     _te_cl(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x"), REJECT),
    ("TE.TE obs-fold name", "a leading space: folded into the field before",
     _te_cl(b"X: y\r\n Transfer-Encoding: chunked"), REJECT),
    ("TE.TE bare LF", "X: y<LF>Transfer-Encoding: chunked", _te_cl(b"X: y\nTransfer-Encoding: chunked"), REJECT),
    ("TE.TE bare CR", "X: y<CR>Transfer-Encoding: chunked", _te_cl(b"X: y\rTransfer-Encoding: chunked"), REJECT),
    ("TE.TE folded colon", "Transfer-Encoding<CRLF> : chunked", _te_cl(b"Transfer-Encoding\r\n : chunked"), REJECT),
    ("TE.TE chunked, identity", "chunked not the last coding", _te_cl(b"Transfer-Encoding: chunked, identity"),
     REJECT),
    ("TE.TE identity, chunked", "a coding before chunked", _te_cl(b"Transfer-Encoding: identity, chunked"), REJECT),
    ("TE.TE quoted", 'Transfer-Encoding: "chunked"', _te_cl(b'Transfer-Encoding: "chunked"'), REJECT),
    ("TE.TE upper case", "Transfer-Encoding: CHUNKED (valid, but with Content-Length)",
     _te_cl(b"Transfer-Encoding: CHUNKED"), REJECT),
    ("TE.TE vertical tab", "Transfer-Encoding: chunked<VT>", _te_cl(b"Transfer-Encoding: chunked\x0b"), REJECT),
    ("TE.TE NUL", "Transfer-Encoding: <NUL>chunked", _te_cl(b"Transfer-Encoding: \x00chunked"), REJECT),
    ("TE.TE underscore", "Transfer_Encoding: chunked (not Transfer-Encoding: dropped, so CL frames it)",
     _te_cl(b"Transfer_Encoding: chunked"), BY_LENGTH),
    ("TE in HTTP/1.0", "Transfer-Encoding: chunked in an HTTP/1.0 request",
     _post([b"Transfer-Encoding: chunked"], b"0\r\n\r\n" + SMUGGLED, b"HTTP/1.0"), REJECT),
    ("CL.CL differ", "Content-Length: 0 and Content-Length: N",
     _post([b"Content-Length: 0", b"Content-Length: %d" % len(SMUGGLED)], SMUGGLED), REJECT),
    ("CL.CL same", "Content-Length: N twice", _post([b"Content-Length: %d" % len(SMUGGLED)] * 2, SMUGGLED),
     REJECT),
    ("CL list", "Content-Length: 0, N", _post([b"Content-Length: 0, %d" % len(SMUGGLED)], SMUGGLED), REJECT),
    ("CL plus sign", "Content-Length: +0", _post([b"Content-Length: +0"], SMUGGLED), REJECT),
    ("CL space before colon", "Content-Length : N", _post([b"Content-Length : 0"], SMUGGLED), REJECT),
    ("chunk size 0x", "chunk size written 0x..", _post([b"Transfer-Encoding: chunked"],
                                                        b"0x%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)),
     REJECT),
    ("chunk size overflow", "chunk size past 2^64", _post([b"Transfer-Encoding: chunked"],
                                                          b"1" + b"0" * 16 + b"\r\n" + SMUGGLED), REJECT),
    ("chunk bare LF", "chunk size line ended by LF", _post([b"Transfer-Encoding: chunked"],
                                                           b"0\n\r\n" + SMUGGLED), REJECT),
]

DESYNC = "DESYNCHRONISED: the body was served as a request"


def outcome(port: int, data: bytes) -> str:
    """Send one probe on a new connection and say what the server did with it."""
    client = Client(port)
    try:
        client.send(data)
        answers = client.responses(2, timeout=1.5)
        closed = client.closed(0.5)
    finally:
        client.close()
    hidden_served = any(r.body == b"GET /smuggled" for r in answers)
    if not answers:
        return "closed without an answer" if closed else "no answer (waits)"
    first = answers[0]
    if first.body in (_SIZE_LINE, b"0\r\n\r\n" + SMUGGLED) and first.status < 400:
        return BY_LENGTH + (", the rest served as the next request" if hidden_served else "")
    if hidden_served:
        return DESYNC
    if first.status >= 400:
        return f"{REJECT} ({first.status}{', closed' if closed else ', left open'})"
    if first.body == SMUGGLED:
        return "served as one request (the hidden one is its body)"
    return f"{first.status}, body {first.body[:30]!r}"


def main() -> int:
    """Print the probe table for both engines (markdown)."""
    from conformance.conftest import start_master  # noqa: PLC0415 - pytest's fixtures module, needed only here

    results: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("httptools", "pywsgi"):
            master = start_master(Path(tmp), engine)
            try:
                results[engine] = [outcome(master.port, data) for _, _, data, _ in PROBES]
            finally:
                master.kill_all()
    print("| probe | what it sends | httptools | pywsgi |\n|---|---|---|---|")
    for i, (name, what, _, _) in enumerate(PROBES):
        print(f"| {name} | {what} | {results['httptools'][i]} | {results['pywsgi'][i]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
