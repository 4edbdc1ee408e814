"""The keep-alive pool (master/core/pool.py): one readiness set all workers share.

Real master, real workers, real sockets. With time slices off the workers pool every kept
connection (nothing tells them which requests compute), so these tests need no computing warm-up.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time

import pytest

from support import wait_for

POOL_OFF_SLICES_OFF = ("--time-slice", "0")


def _busy_clients(port: int, count: int, seconds: float) -> tuple[list, list[str], threading.Event, list]:
    """`count` keep-alive connections sending `/` back to back for `seconds` (never idle long
    enough to be parked): every (start, latency), every failure, an event set once all have
    started, the threads."""
    latencies: list[tuple[float, float]] = []
    failures: list[str] = []
    started = threading.Event()
    lock = threading.Lock()
    ready = [0]

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        end = time.monotonic() + seconds
        first = True
        try:
            while time.monotonic() < end:
                began = time.monotonic()
                try:
                    conn.request("GET", "/")
                    answer = conn.getresponse()
                    answer.read()
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        failures.append(repr(exc))
                    return
                with lock:
                    latencies.append((began, time.monotonic() - began))
                    if first:
                        first = False
                        ready[0] += 1
                        if ready[0] == count:
                            started.set()
        finally:
            conn.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return latencies, failures, started, threads


@pytest.mark.parametrize("pool", ["1", "0"])
def test_busy_keep_alive_connections_are_not_held_behind_a_computing_request(master, pool):
    """Connections that are never idle (so never parked) on the worker that starts computing for
    1.5 s: pooled, their requests go to the other worker; without the pool they wait it out."""
    m = master("--keepalive-pool", pool, *POOL_OFF_SLICES_OFF, workers=2)
    latencies, failures, started, threads = _busy_clients(m.port, 4, 4.0)
    assert started.wait(10), "the clients did not start"
    slow = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    try:
        spin_began = time.monotonic()
        slow.request("GET", "/spin?s=1.5")
        answer = slow.getresponse()
        answer.read()
        assert answer.status == 200
        spin_ended = time.monotonic() - 0.3
    finally:
        slow.close()
        for thread in threads:
            thread.join(15)
    during = [latency for began, latency in latencies if spin_began <= began < spin_ended]
    assert not failures
    assert during, "no fast request was answered while the spin ran"
    if pool == "1":
        assert max(during) < 0.5, max(during)  # the free worker took them
    else:
        assert max(during) > 1.0, max(during)  # those on the spinning worker waited: what the pool is for


def test_a_pooled_connection_the_client_closes_leaves_the_pool(master):
    m = master(*POOL_OFF_SLICES_OFF, workers=2)
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=5)
    conn.request("GET", "/")
    conn.getresponse().read()
    wait_for(lambda: m.status()["master"]["pooled"] == 1, timeout=5, what="the connection pooled")
    conn.request("GET", "/")  # served from the pool, and pooled again
    assert conn.getresponse().status == 200
    conn.close()
    wait_for(lambda: m.status()["master"]["pooled"] == 0, timeout=5, what="the closed connection forgotten")
    assert "Traceback" not in m.log()


def test_an_idle_pooled_connection_is_closed_after_the_keep_alive_timeout(master):
    m = master("--keepalive-timeout", "1", *POOL_OFF_SLICES_OFF, workers=2)
    sock = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        wait_for(lambda: m.status()["master"]["pooled"] == 1, timeout=5, what="the connection pooled")
        began = time.monotonic()
        assert sock.recv(1) == b""  # the end, from the master: the workers' copies do not keep it open
        assert 0.5 < time.monotonic() - began < 4.0
    finally:
        sock.close()
    wait_for(lambda: m.status()["master"]["pooled"] == 0, timeout=5, what="the pool empty")


def test_a_worker_killed_while_serving_a_pooled_connection_ends_only_that_one(master):
    m = master(*POOL_OFF_SLICES_OFF, workers=2)
    victim = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    other = http.client.HTTPConnection("127.0.0.1", m.port, timeout=5)
    try:
        victim.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in victim.recv(65536)
        other.request("GET", "/")
        other.getresponse().read()
        wait_for(lambda: m.status()["master"]["pooled"] == 2, timeout=5, what="both connections pooled")
        victim.sendall(b"GET /spin?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        busy = wait_for(lambda: [w["pid"] for w in m.status()["workers"] if w["in_flight"]], timeout=5,
                        what="the spinning worker")
        os.kill(busy[0], signal.SIGKILL)
        victim.settimeout(5)
        try:
            assert victim.recv(1) == b""  # ended, not left hanging
        except ConnectionResetError:
            pass
        other.request("GET", "/")  # the other pooled connection goes on, served by a live worker
        answer = other.getresponse()
        answer.read()
        assert answer.status == 200 and int(answer.getheader("X-Worker-Pid")) != busy[0]
        wait_for(lambda: m.status()["master"]["pooled"] == 1, timeout=5, what="the victim forgotten")
    finally:
        victim.close()
        other.close()


def test_a_rolling_restart_under_pooled_keep_alive_load_fails_no_request(master):
    m = master(*POOL_OFF_SLICES_OFF, workers=2)
    latencies, failures, started, threads = _busy_clients(m.port, 6, 6.0)
    assert started.wait(10)
    old = set(m.workers())
    result = m.ctl("reload")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: m.status()["master"]["reload"]["state"] == "done", timeout=30, what="the restart")
    assert not set(m.workers()) & old
    for thread in threads:
        thread.join(15)
    assert not failures, failures[:3]
    assert len(latencies) > 100


def test_a_pooled_connection_carries_large_bodies_both_ways(master):
    """Bodies that take many reads and writes: the worker that took the connection waits on it
    through its own poller until the exchange is over, then puts it back."""
    m = master(*POOL_OFF_SLICES_OFF, workers=2)
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        wait_for(lambda: m.status()["master"]["pooled"] == 1, timeout=5, what="the connection pooled")
        for _ in range(3):
            body = b"y" * (3 << 20)
            conn.request("POST", "/echo", body=body)
            answer = conn.getresponse()
            assert answer.read() == str(len(body)).encode()
            conn.request("GET", "/big?n=4000000")
            answer = conn.getresponse()
            assert len(answer.read()) == 4000000
        assert m.status()["master"]["pooled"] == 1  # the same connection all along
    finally:
        conn.close()


def test_the_pooled_connections_are_a_prometheus_gauge(master):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from support import free_port

    port = free_port()
    m = master(*POOL_OFF_SLICES_OFF, workers=2, env={"METRICS_BIND": f"127.0.0.1:{port}"})

    def held(where: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return next(s.value for family in text_string_to_metric_families(text) for s in family.samples
                    if s.name == "pycluster_keepalive_connections_held" and s.labels == {"where": where})

    conns = [http.client.HTTPConnection("127.0.0.1", m.port, timeout=5) for _ in range(3)]
    try:
        for conn in conns:
            conn.request("GET", "/")
            conn.getresponse().read()
        wait_for(lambda: held("pool") == 3, timeout=10, what="3 pooled connections in /metrics")
        assert held("parked") == 0
    finally:
        for conn in conns:
            conn.close()
    wait_for(lambda: held("pool") == 0, timeout=10, what="the pool empty in /metrics")


def test_pooled_connections_that_come_and_go_fast_never_lose_a_request(master):
    """Connections end and new ones reuse their numbers while other workers still hold the old
    ones: a worker must never serve the new connection's request from the old one (generations)."""
    m = master(*POOL_OFF_SLICES_OFF, workers=2)
    failures: list[str] = []
    served = [0]
    lock = threading.Lock()

    def churn() -> None:
        end = time.monotonic() + 4
        while time.monotonic() < end:
            conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=5)
            try:
                for path in ("/", "/spin?s=0.002", "/"):
                    conn.request("GET", path)
                    answer = conn.getresponse()
                    answer.read()
                    if answer.status != 200:
                        raise http.client.HTTPException(f"status {answer.status}")
                    with lock:
                        served[0] += 1
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    failures.append(repr(exc))
            finally:
                conn.close()

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert served[0] > 300
    assert not failures, failures[:5]
    assert "Traceback" not in m.log()
