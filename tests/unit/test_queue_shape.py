"""The queue-shape experiment's fixture (loadtest/queue_shape.py): split, each process keeps its own
connections; pooled, either process may answer any connection's next request."""

import os
import socket
import time

import pytest

from loadtest import queue_shape

CONNECTIONS = 8


def start(mode):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        try:
            queue_shape.server(mode, listener)
        finally:
            os._exit(0)
    listener.close()
    probe = socket.create_connection(("127.0.0.1", port))  # wrk's first connection, closed at once
    probe.close()
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CONNECTIONS)]
    return pid, conns


def ask(conn, path):
    """One request on `conn`: the pid of the process that answered it."""
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return reply_of(conn)


def finish(pid, conns):
    for conn in conns:
        conn.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.02)
    os.killpg(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the fixture did not end when its clients closed")


@pytest.mark.timeout(60)
def test_split_keeps_each_connection_on_one_process_and_uses_both():
    pid, conns = start("split")
    try:
        seen = [{ask(c, "/work" if i % 4 == 0 else "/") for i in range(4)} for c in conns]
    finally:
        finish(pid, conns)
    assert all(len(pids) == 1 for pids in seen)
    assert len(set().union(*seen)) == 2


@pytest.mark.timeout(60)
def test_pooled_lets_the_free_process_take_a_request_while_the_other_computes(mode="pooled"):
    pid, conns = start(mode)
    apart = 0
    try:
        for trial in range(5):
            # two connections split mode would give the same process (every other one)
            busy, other = conns[2 * trial % CONNECTIONS], conns[(2 * trial + 2) % CONNECTIONS]
            busy.sendall(b"GET /work HTTP/1.1\r\nHost: t\r\n\r\n")  # 10 ms of CPU in one process
            fast = ask(other, "/")
            apart += fast != reply_of(busy)
    finally:
        finish(pid, conns)
    # While one process computes, the other takes the next request, whatever its connection. (A trial
    # can land both on one process only if that one finished the first before the other woke.)
    assert apart >= 3


def reply_of(conn):
    """Read one answer: the pid in its body."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    return int(body)
