"""A handed-over connection on real loopback TCP: peeking at idempotent requests, and
what the primary's copy of the connection can tell from the kernel's counters."""
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from master.core.lane import unread_bytes
from master.scheduling.rr import tcp_state
from master.worker.retryable_socket import RetryableSocket
from support import wait_for

GET = b"GET /count HTTP/1.1\r\nHost: t\r\n\r\n"
POST = b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"


@pytest.fixture
def connection(tcp_pair):
    """(client, worker's RetryableSocket peeking, primary's copy of the descriptor)."""
    listener, client = tcp_pair
    primary, _ = listener.accept()
    worker = RetryableSocket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=os.dup(primary.fileno()))
    worker.peek_first_request()
    yield client, worker, primary
    worker.close()
    primary.close()


def _start_handler(worker):
    worker.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # what the worker's handler does first


def test_an_idempotent_request_stays_queued_until_the_answer_starts(connection):
    client, worker, primary = connection
    client.sendall(GET)
    assert tcp_state.progress(primary.fileno()) == tcp_state.UNREAD
    _start_handler(worker)
    reader = worker.makefile("rb")
    assert reader.readline() == b"GET /count HTTP/1.1\r\n"
    assert reader.readline() == b"Host: t\r\n" and reader.readline() == b"\r\n"
    assert unread_bytes(primary.fileno()) == len(GET)  # read through, yet all still queued
    assert tcp_state.progress(primary.fileno()) == tcp_state.BEGUN  # so another worker could serve it
    worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert unread_bytes(primary.fileno()) == 0  # consumed just before answering
    assert tcp_state.progress(primary.fileno()) == tcp_state.TOUCHED
    assert client.recv(100).startswith(b"HTTP/1.1 200")


def test_a_post_is_read_the_ordinary_way(connection):
    client, worker, primary = connection
    client.sendall(POST)
    _start_handler(worker)
    reader = worker.makefile("rb")
    assert reader.readline() == b"POST /count HTTP/1.1\r\n"
    assert unread_bytes(primary.fileno()) == 0  # gone from the queue before the app runs
    assert tcp_state.progress(primary.fileno()) == tcp_state.TOUCHED


def test_a_request_that_has_not_fully_arrived_is_read_the_ordinary_way(connection):
    client, worker, primary = connection
    client.sendall(b"GET / HTTP/1.1\r\n")
    _start_handler(worker)
    reader = worker.makefile("rb")
    assert reader.readline() == b"GET / HTTP/1.1\r\n"
    with ThreadPoolExecutor(1) as pool:
        line = pool.submit(reader.readline)  # needs more than has arrived: peeking stops here
        wait_for(lambda: unread_bytes(primary.fileno()) == 0, timeout=5, what="the peeked bytes consumed")
        client.sendall(b"Host: t\r\n\r\n")
        assert line.result(timeout=5) == b"Host: t\r\n"
    assert reader.readline() == b"\r\n"
    assert tcp_state.progress(primary.fileno()) == tcp_state.TOUCHED


def test_a_second_request_on_the_connection_is_read_normally(connection):
    client, worker, primary = connection
    client.sendall(GET)
    reader = worker.makefile("rb")
    while reader.readline() != b"\r\n":
        pass
    worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    client.sendall(GET)
    assert reader.readline() == b"GET /count HTTP/1.1\r\n"
    assert unread_bytes(primary.fileno()) == 0


def test_closing_shuts_the_connection_down_although_the_primary_holds_a_copy(connection):
    client, worker, _primary = connection
    worker.close()
    client.settimeout(5)
    assert client.recv(10) == b""  # end of file at once, not when the primary's copy closes


def test_the_primary_closes_a_dead_workers_answered_connection_without_a_reset(connection):
    client, worker, primary = connection
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")  # never read by anyone
    primary.sendall(b"HTTP/1.1 200 OK\r\n\r\n")  # what the worker sent before it was killed
    os.close(worker.detach())  # killed: the kernel closes its descriptor, nothing more
    fd = primary.detach()
    assert tcp_state.progress(fd) == tcp_state.TOUCHED
    tcp_state.close_gently(fd)
    client.settimeout(5)
    assert client.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert client.recv(100) == b""  # a plain close with the request unread would reset instead


def test_a_connection_the_worker_finished_counts_as_ended(connection):
    client, worker, primary = connection
    client.sendall(GET)
    worker.makefile("rb").readline()
    worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    worker.close()  # shut down, although the primary still holds its copy
    assert tcp_state.progress(primary.fileno()) == tcp_state.ENDED
