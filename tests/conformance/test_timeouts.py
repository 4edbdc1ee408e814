"""Slow and silent clients: each wait on a client has a deadline, and a slow but steady client is served."""
import time

from conformance.client import Client, request
from conformance.conftest import BODY_TIMEOUT, HEADER_TIMEOUT, KEEPALIVE_TIMEOUT

SLACK = 1.5  # the sweep's period, the scheduler, a loaded machine


def _closed_after(client, at_least, at_most):
    start = time.monotonic()
    assert client.closed(timeout=at_most + SLACK), "still open"
    took = time.monotonic() - start
    assert took >= at_least * 0.5, f"closed after {took:.2f} s, before its timeout"


def test_an_unfinished_head_times_out(served):
    client = Client(served.port)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Partial: ")
        _closed_after(client, HEADER_TIMEOUT, HEADER_TIMEOUT)  # quietly: no answer feeds a slow reader
    finally:
        client.close()


def test_a_connection_that_sends_nothing_is_closed(served):
    client = Client(served.port)
    try:
        _closed_after(client, min(HEADER_TIMEOUT, KEEPALIVE_TIMEOUT), HEADER_TIMEOUT)
    finally:
        client.close()


def test_an_idle_keep_alive_connection_is_closed(served):
    client = Client(served.port)
    try:
        assert client.send(request()).response().status == 200
        _closed_after(client, KEEPALIVE_TIMEOUT, KEEPALIVE_TIMEOUT)
    finally:
        client.close()


def test_a_stalled_body_times_out(served):
    client = Client(served.port)
    try:
        client.send(request("POST", "/echo", ("Content-Length: 100",), b"only part of it"))
        _closed_after(client, BODY_TIMEOUT, BODY_TIMEOUT)
    finally:
        client.close()


def test_a_slow_but_steady_client_is_served(served):
    # Byte by byte, each well within the body timeout, longer in all than any one timeout.
    client = Client(served.port)
    try:
        body = b"0123456789" * 2
        data = request("POST", "/echo", (f"Content-Length: {len(body)}",), body)
        head_end = data.index(b"\r\n\r\n") + 4
        client.send(data[:head_end])
        for i in range(len(body)):
            client.send(body[i:i + 1])
            time.sleep(BODY_TIMEOUT / 10)
        answer = client.response()
        assert answer.status == 200 and answer.body == body
    finally:
        client.close()


def _disconnect_mid_body(port, times=3):
    for _ in range(times):
        client = Client(port)
        client.send(request("POST", "/echo", ("Content-Length: 50000",), b"x" * 1000))
        client.close()


def test_a_client_that_disconnects_mid_body_leaves_the_worker_serving(served):
    _disconnect_mid_body(served.port)
    fresh = Client(served.port)
    try:
        answer = fresh.send(request("GET", "/still-here")).response()
        assert answer.status == 200 and answer.body == b"GET /still-here"
    finally:
        fresh.close()


def test_a_client_that_disconnects_mid_body_is_no_error(served, pywsgi_gap):
    pywsgi_gap("logs a traceback (OSError: unexpected end of file) for each")
    before = served.master.log().count("Traceback")
    _disconnect_mid_body(served.port)
    assert Client(served.port).send(request("GET", "/after")).response().status == 200
    assert served.master.log().count("Traceback") == before
