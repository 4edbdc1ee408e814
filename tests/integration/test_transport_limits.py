"""The transport limits on the pywsgi engine, against a real master on real sockets.

Timeouts are set short (1-2 s) so the suite stays quick; each test says what a client sees:
a status line and a close, or a close at the right time, never a hang or a silent drop.
"""
from __future__ import annotations

import socket
import time

import pytest

from support import wait_for

FAST = {"HEADER_TIMEOUT": "1", "KEEPALIVE_TIMEOUT": "1", "BODY_TIMEOUT": "1"}


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_close(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError(f"still open after {timeout} s; got {data[:200]!r}") from None
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, the connection left open."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a full head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def send_ignoring_reset(sock: socket.socket, data: bytes) -> int:
    """Send `data`; how much went out before the server stopped taking it."""
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    return sent


@pytest.fixture(params=["rr", "shared"])
def fast_master(request, master):
    """One worker with 1 s head, keep-alive and body timeouts, under each way of accepting."""
    return master("--policy", request.param, workers=1, env=FAST)


# -- timeouts --------------------------------------------------------------------------------
def test_a_silent_connection_is_closed_after_the_header_timeout(fast_master):
    with connect(fast_master.port) as sock:
        data, took = read_until_close(sock)
    assert data == b"" and 0.7 < took < 3


def test_a_trickled_head_is_closed_at_its_deadline_not_one_per_read(fast_master):
    with connect(fast_master.port) as sock:
        started = time.monotonic()
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ":
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)  # this is the attack: a byte every 0.1 s, under any per-read timeout
            sock.settimeout(0.001)
            try:
                if sock.recv(1) == b"":
                    break
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
    assert time.monotonic() - started < 2.5


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(fast_master):
    with connect(fast_master.port) as sock:
        for _ in range(2):  # keep-alive works within the timeout...
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)
        data, took = read_until_close(sock)  # ...and then the idle connection goes
    assert data == b"" and 0.4 < took < 3


def test_a_stalled_body_is_closed_after_the_body_timeout(fast_master):
    with connect(fast_master.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        data, took = read_until_close(sock)
    assert took < 3 and (data == b"" or data.startswith(b"HTTP/1.1 400")), data


# -- sizes -----------------------------------------------------------------------------------
def test_a_header_block_past_64_kib_is_a_431_and_a_close(fast_master):
    with connect(fast_master.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        send_ignoring_reset(sock, b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(90)) + b"\r\n")
        data, took = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 431 ") and b"Connection: close" in data and took < 3


def test_too_many_header_fields_is_a_431(fast_master):
    with connect(fast_master.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n")
        data, _ = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 431 ")


def test_a_request_line_past_the_limit_is_a_414(fast_master):
    with connect(fast_master.port) as sock:
        sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 414 ")
    with connect(fast_master.port) as sock:  # just under it is fine
        sock.sendall(b"GET /" + b"a" * 8100 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_close(sock)[0].startswith(b"HTTP/1.1 200")


def test_a_body_past_max_body_bytes_is_a_413_and_is_not_read(master):
    m = master(workers=1, env={**FAST, "MAX_BODY_BYTES": "1M"})
    with connect(m.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
        sent = send_ignoring_reset(sock, b"x" * (20 * 1024 * 1024))  # it keeps sending, as requests does
        data, _ = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in data, data[:200]
    assert sent < 8 * 1024 * 1024  # the server stopped taking the body long before 20 MB


def test_a_chunked_body_past_max_body_bytes_is_a_413(master):
    m = master(workers=1, env={**FAST, "MAX_BODY_BYTES": "100K"})
    chunk = b"%x\r\n%s\r\n" % (32768, b"y" * 32768)
    with connect(m.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        send_ignoring_reset(sock, chunk * 8 + b"0\r\n\r\n")
        data, _ = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    with connect(m.port) as sock:  # under the limit, the body arrives whole
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     + chunk * 2 + b"0\r\n\r\n")
        assert read_until_close(sock)[0].endswith(b"\r\n\r\n65536")


@pytest.mark.parametrize("length, status", [(b"1e30", 400), (b"1" + b"0" * 30, 413), (b"+12", 400),
                                            (b"1_000", 400), (b"12, 13", 400)])
def test_a_content_length_that_cannot_be_served_is_answered_at_once(fast_master, length, status):
    with connect(fast_master.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
        data, took = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 %d " % status) and took < 2, data


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                                     b"Content-Length: 5\r\nContent-Length: 6\r\n",
                                     b"Transfer-Encoding: gzip, chunked\r\n"])
def test_ambiguous_framing_is_a_400(fast_master, framing):
    with connect(fast_master.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n")
        data, _ = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 400 "), data


def test_the_app_s_own_413_closes_without_reading_the_body(master):
    # MAX_BODY_BYTES is the server's; an app may refuse smaller bodies itself (Flask's
    # MAX_CONTENT_LENGTH answers 413 without reading). The server must not read them either.
    m = master(workers=1, app="apps.refuse_body:app", env=FAST)
    with connect(m.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
        sent = send_ignoring_reset(sock, b"x" * (20 * 1024 * 1024))
        data, _ = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in data, data[:300]
    assert sent < 8 * 1024 * 1024


# -- the connection cap -------------------------------------------------------------------------
# rr reads its lane a record at a time, and a record holds what the primary sent since the
# last read: under the primary's in-flight cap of 16, at most 15 connections past the cap.
OVERSHOOT = {"shared": 1, "rr": 15}


@pytest.mark.parametrize("policy", ["rr", "shared"])
def test_past_the_cap_connections_wait_and_are_served_never_dropped(master, policy):
    m = master("--policy", policy, workers=1, env={**FAST, "HEADER_TIMEOUT": "2", "WORKER_CONNECTIONS": "20"})
    worker = m.workers()[0]
    base = _fds(worker)
    idle = [connect(m.port) for _ in range(60)]  # three times the cap, sending nothing
    try:
        wait_for(lambda: _fds(worker) >= base + 20, timeout=5, what="the worker at its cap")
        time.sleep(0.3)  # give an uncapped worker the chance to take more
        assert _fds(worker) <= base + 20 + OVERSHOOT[policy]
        real = connect(m.port)  # queued behind the idle ones, served once they time out
        real.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, took = read_until_close(real, timeout=15)
        assert data.startswith(b"HTTP/1.1 200"), data
        assert "at its cap of 20 connections" in m.log()
    finally:
        for sock in idle:
            sock.close()


def _fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))
