"""Balancing load, not just connections: keep-alive clients follow the workers that join.

Real master, real workers, real keep-alive clients (one thread per connection, each recording
which worker answered). The requests spin on the CPU for a few ms, so a worker's share of the
answers is its share of the work.
"""
from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections import Counter

import pytest

from support import Master, wait_for

WORK = "/spin?s=0.004"


class KeepAliveClients:
    """`count` threads, each one keep-alive connection sending WORK until stopped; every answer recorded."""

    def __init__(self, port: int, count: int = 8, path: str = WORK) -> None:
        self.port = port
        self.path = path
        self.answers: list[tuple[float, int, str]] = []  # (time, client, worker pid)
        self.failures: list[tuple[float, int, str]] = []
        self.connections = 0  # opened, in all: a client reconnects only when told to or cut off
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]
        self.lock = threading.Lock()

    def start(self) -> "KeepAliveClients":
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, index: int) -> None:
        conn = None
        deadline = time.monotonic() + 60  # bounded whatever happens to the test
        while not self.stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                with self.lock:
                    self.connections += 1
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                pid = response.getheader("X-Worker-Pid", "")
                with self.lock:
                    self.answers.append((time.monotonic(), index, pid))
                if response.will_close:  # told to go elsewhere: reconnect, as every client does
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append((time.monotonic(), index, repr(exc)))
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def shares(self, since: float, until: float) -> Counter:
        with self.lock:
            return Counter(pid for t, _, pid in self.answers if since <= t < until)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


@pytest.fixture
def clients():
    started: list[KeepAliveClients] = []

    def start(port: int, count: int = 8, path: str = WORK) -> KeepAliveClients:
        started.append(KeepAliveClients(port, count, path).start())
        return started[-1]

    yield start
    for c in started:
        c.finish()


def busy_pids(clients: KeepAliveClients, since: float, until: float) -> Counter:
    wait_for(lambda: time.monotonic() >= until, timeout=until - time.monotonic() + 5, what="the window to pass")
    return clients.shares(since, until)


def test_a_replacement_worker_under_keep_alive_load_serves_its_share_within_3_s(master, clients):
    m = master(workers=2)
    load = clients(m.port)
    wait_for(lambda: len(load.shares(0, float("inf"))) == 2, timeout=10, what="both workers answering")
    victim = m.workers()[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    shares = busy_pids(load, killed_at + 3, killed_at + 5)
    total = sum(shares.values())
    assert victim not in {int(p) for p in shares}
    assert len(shares) == 2 and total, shares
    assert max(shares.values()) / total <= 0.65, shares  # the newcomer carries about half


class NewConnectionClients:
    """`count` threads, each sending `/` on a new connection per request until stopped."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.stop = port, threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def test_keep_alive_clients_are_spread_again_beside_new_connection_traffic(master, clients):
    """Connections that serve one request and close come and go on both workers; after a kill the
    keep-alive clients must still end up shared, 3 s on (the decisions that keep the churn from
    steering them are unit-tested in tests/unit/test_balance_decisions.py)."""
    m = master(workers=2)
    load = clients(m.port, count=8, path="/")
    churn = NewConnectionClients(m.port, 8)
    try:
        wait_for(lambda: len(load.shares(0, float("inf"))) == 2, timeout=10, what="both workers answering")
        victim = m.workers()[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: time.monotonic() >= killed_at + 4, timeout=10, what="4 s after the kill")
        with load.lock:
            where = {client: pid for t, client, pid in load.answers if t >= killed_at + 3}  # each one's last worker
    finally:
        churn.finish()
    held = Counter(where.values())
    assert str(victim) not in held and len(where) == 8, where
    assert sorted(held.values()) in ([4, 4], [3, 5]), held  # both workers hold keep-alive clients
    assert load.failures == [] or all(t < killed_at + 1 for t, _, _ in load.failures), load.failures


# Not `shared`: there the workers share one accept queue, and whichever turns to it first
# drains what queued while they booted (the master cannot place those connections).
@pytest.mark.parametrize("policy", ["rr", "reuseport"])
def test_start_up_under_load_spreads_the_connections(tmp_path, clients, policy):
    m = Master(tmp_path, "apps.hello:app", 2, "--policy", policy).start()
    try:
        # Clients connect as soon as the master listens, before any worker has booted.
        wait_for(lambda: _connects(m.port), timeout=20, what="the master's listener")
        count = 8 if policy == "rr" else 16
        load = clients(m.port, count=count)

        def first_answers() -> dict[int, str]:
            first: dict[int, str] = {}
            with load.lock:
                for _t, client, pid in load.answers:
                    first.setdefault(client, pid)
            return first

        first = wait_for(lambda: len(first_answers()) == count and first_answers(), timeout=30,
                         what="an answer on every connection")
        spread = sorted(Counter(first.values()).values())
        if policy == "rr":
            assert load.failures == []
            assert spread == [4, 4], first  # the master placed every connection: 4 and 4
        else:  # the kernel hashes them, but no worker listened before the other could
            assert len(spread) == 2, first
    finally:
        m.kill_all()


def _connects(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("pool", ["1", "0"])
def test_rebalancing_after_a_scale_up_never_fails_a_request(master, clients, pool):
    m = master("--keepalive-pool", pool, workers=2)
    load = clients(m.port, count=9)
    wait_for(lambda: len(load.shares(0, float("inf"))) == 2, timeout=10, what="both workers answering")
    assert m.ctl("scale", "3").returncode == 0
    scaled_at = time.monotonic()
    shares = busy_pids(load, scaled_at + 3, scaled_at + 5)
    assert len(shares) == 3, shares
    assert max(shares.values()) / sum(shares.values()) <= 0.45, shares
    if pool == "1":  # the requests compute, so kept connections wait in the pool, which the new worker takes from
        assert m.status()["master"]["pooled"] >= 2
    else:  # connections were moved, not just new ones
        assert sum(w["shed"] for w in m.status()["workers"]) >= 2
    load.finish()
    assert load.failures == []


def test_keep_alive_clients_moved_by_a_rebalance_stay_where_they_were_moved(master, clients):
    """A connection given up to rebalance goes into the keep-alive pool, where whichever worker is
    free serves its next request. The worker that gave it up must not keep it again while it holds
    its share of the clients from its lane (master/core/pool.py, may_keep). Without that, half the
    moved connections came back each round: after this scale-up, 16 clients took 23 to 40 moves and
    2.5 to 5 s to reach 8 and 8 (measured), against 8 moves and a quarter of a second."""
    m = master(workers=1)
    load = clients(m.port, count=16, path="/")  # fast requests: only a rebalance sends them to the pool
    wait_for(lambda: len(load.answers) >= 160, timeout=10, what="the clients answered")
    assert m.ctl("scale", "2").returncode == 0
    scaled_at = time.monotonic()

    def split() -> list[int]:
        with load.lock:
            where = {client: pid for t, client, pid in load.answers if t >= scaled_at}  # each one's latest worker
        return sorted(Counter(where.values()).values()) if len(where) == 16 else []

    wait_for(lambda: split() == [8, 8], timeout=3, what=f"8 and 8 clients (now {split()})")
    settled_at = time.monotonic()
    wait_for(lambda: time.monotonic() >= settled_at + 1, timeout=5, what="a second more")
    assert split() == [8, 8]  # and they stay
    moved = sum(w["shed"] for w in m.status()["workers"])
    # Each moved about once, not back and forth (a client that paused may move through the pool
    # without a shed, so fewer than 8 is fine: CI once counted 7).
    assert moved <= 12, moved
    load.finish()
    assert load.failures == []


@pytest.mark.parametrize("pool", ["1", "0"])
@pytest.mark.parametrize("operation", ["reload", "scale-down"])
def test_a_draining_worker_passes_its_keep_alive_clients_on_without_closing_them(master, clients, pool,
                                                                              operation):
    """rr, its listener open: a worker leaving (a rolling restart, a scale-down) gives its keep-alive
    connections back to the master once their next answer is sent (idle ones after 0.1 s, as
    always), and they go on with the others. Told `Connection: close` instead, every client
    reconnected: 16 to 18 connections for 8 clients over a rolling restart (measured)."""
    m = master("--keepalive-pool", pool, workers=2)
    load = clients(m.port, count=8, path="/")
    wait_for(lambda: len(load.shares(0, float("inf"))) == 2, timeout=10, what="both workers answering")
    old = set(m.workers())
    if operation == "reload":
        assert m.ctl("reload").returncode == 0
        wait_for(lambda: m.status()["master"]["reload"]["state"] == "done", timeout=30, what="the restart")
        gone = old
    else:
        assert m.ctl("scale", "1").returncode == 0
        wait_for(lambda: len(m.workers()) == 1, timeout=30, what="one worker left")
        gone = old - set(m.workers())
    moved_at = time.monotonic()
    wait_for(lambda: len({c for t, c, _ in load.answers if t > moved_at}) == 8, timeout=10,
             what="every client answered since")
    load.finish()
    with load.lock:
        where = {client: int(pid) for t, client, pid in load.answers if t > moved_at}
    assert not set(where.values()) & gone, where  # every client is on a worker that stayed, or a successor
    assert load.failures == []
    assert load.connections == 8  # and none of them had to reconnect


def test_a_stalled_worker_stops_receiving_connections_and_what_it_held_is_served(master):
    import requests

    m = master(workers=2)
    stopped = m.workers()[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        slowest, pids = 0.0, set()
        for _ in range(12):
            start = time.monotonic()
            answer = requests.get(m.url + "/", timeout=10, headers={"Connection": "close"})
            slowest = max(slowest, time.monotonic() - start)
            assert answer.status_code == 200
            pids.add(int(answer.headers["X-Worker-Pid"]))
        assert pids == {m.workers()[1]} or stopped not in pids
        assert slowest < 3.0, slowest  # not the watchdog's 30 s: taken back after about a second
        assert "is stalled" in m.log()
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_for(lambda: "making progress again" in m.log(), timeout=10, what="the stalled worker back")


@pytest.mark.parametrize("pool", ["1", "0"])
def test_a_slow_request_does_not_delay_fast_requests_on_other_connections(master, pool):
    """Idle keep-alive connections wait in the keep-alive pool (or, without it, parked in the
    master); either way their next requests go to the worker that is free."""
    m = master("--keepalive-pool", pool, workers=2)
    conns = [http.client.HTTPConnection("127.0.0.1", m.port, timeout=10) for _ in range(4)]
    held = "pooled" if pool == "1" else "parked"
    try:
        for conn in conns:  # each connection serves a request, then idles
            conn.request("GET", "/")
            conn.getresponse().read()
        wait_for(lambda: m.status()["master"][held] == 4, timeout=5, what=f"the idle connections {held}")
        slow, fast = conns[0], conns[1:]
        slow.request("GET", "/spin?s=2")  # 2 s of CPU: its worker's loop is blocked all along
        wait_for(lambda: any(w["in_flight"] for w in m.status()["workers"]), timeout=5, what="the slow request")
        for conn in fast:
            start = time.monotonic()
            conn.request("GET", "/")
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200
            assert time.monotonic() - start < 1.0  # served by the idle worker, not after the slow one
        assert slow.getresponse().status == 200
    finally:
        for conn in conns:
            conn.close()


def _served_while_spinning(m: Master) -> tuple[float, float]:
    """One worker: a request that computes for 1.5 s, then `/` on a second connection.

    How long `/` took, and how long the computing request took."""
    slow = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    fast = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    try:
        for conn in (slow, fast):  # both connections open and served once, before the slow request
            conn.request("GET", "/")
            conn.getresponse().read()
        began = time.monotonic()
        slow.request("GET", "/spin?s=1.5")
        wait_for(lambda: any(w["in_flight"] for w in m.status()["workers"]), timeout=5, what="the slow request")
        start = time.monotonic()
        fast.request("GET", "/")
        answer = fast.getresponse()
        answer.read()
        fast_s = time.monotonic() - start
        assert answer.status == 200
        done = slow.getresponse()
        done.read()
        assert done.status == 200
        return fast_s, time.monotonic() - began
    finally:
        slow.close()
        fast.close()


def test_a_computing_request_gives_the_others_on_its_worker_a_turn(master):
    """Time slices (master/worker/time_slice.py): `/` is answered while /spin still computes."""
    fast_s, slow_s = _served_while_spinning(master(workers=1))
    assert fast_s < 0.5  # a few slices, not the 1.5 s the spin lasts
    assert slow_s >= 1.5


def test_without_time_slices_a_computing_request_holds_its_worker(master):
    """The same with --time-slice 0: `/` waits for the spin (what the slices are for)."""
    fast_s, _slow_s = _served_while_spinning(master("--time-slice", "0", workers=1))
    assert fast_s > 1.0
