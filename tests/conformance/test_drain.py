"""A drain (SIGTERM): requests in flight finish with `Connection: close`; idle and slow connections
do not hold the worker up."""
import signal
import threading
import time

import pytest

from conformance.client import Client
from conformance.client import request as http_request
from conformance.conftest import ENGINES, start_master
from support import wait_for


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def patient(engine, tmp_path):
    # Long timeouts: only the drain itself may end these connections quickly.
    master = start_master(tmp_path, engine, "--header-timeout", "30", "--keepalive-timeout", "30",
                          "--graceful-timeout", "20")
    try:
        yield engine, master
    finally:
        master.kill_all()


def test_a_request_in_flight_finishes_and_says_close(patient):
    _, master = patient
    client = Client(master.port)
    answers = []
    try:
        client.send(http_request("GET", "/slow?s=2"))
        reader = threading.Thread(target=lambda: answers.append(client.response(timeout=10)))
        reader.start()
        # The request is in the app (it sleeps two seconds) once a heartbeat says so.
        wait_for(lambda: any(w["in_flight"] for w in master.status()["workers"]), 5, what="a request in flight")
        master.signal(signal.SIGTERM)
        reader.join(15)
        assert answers and answers[0] is not None and answers[0].status == 200
        assert answers[0].header("connection") == "close"
        assert master.wait_exit(15) == 0
    finally:
        client.close()


def test_idle_connections_do_not_hold_the_drain_up(patient):
    _, master = patient
    idle = [Client(master.port) for _ in range(10)]
    try:
        for client in idle:
            assert client.send(http_request()).response().status == 200
        start = time.monotonic()
        master.signal(signal.SIGTERM)
        assert master.wait_exit(15) == 0
        assert time.monotonic() - start < 4  # the 30 s keep-alive timeout played no part
        assert all(client.closed(1) for client in idle)
    finally:
        for client in idle:
            client.close()


def test_a_slow_head_holds_the_drain_only_until_its_timeout(engine, tmp_path):
    master = start_master(tmp_path, engine, "--header-timeout", "2", "--graceful-timeout", "20")
    slow = [Client(master.port).send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ") for _ in range(20)]
    try:
        start = time.monotonic()
        master.signal(signal.SIGTERM)
        assert master.wait_exit(15) == 0
        assert time.monotonic() - start < 5
        assert all(c.closed(1) for c in slow)
    finally:
        for c in slow:
            c.close()
        master.kill_all()
