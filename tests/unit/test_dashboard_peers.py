"""The aggregate view's parts: what a replica's answer must be (replicas.py), and the bounded
fetch and the resolution (peers.py) against real sockets that misbehave on purpose."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from master.supervisor.config import ConfigError, load_config
from master.supervisor.peers import FetchError, fetch, resolve
from master.supervisor.replicas import BadAnswer, Replicas


def dashboard_answer(instance="a1", seqs=(1, 2), rps=10.0, host="replica-1"):
    return {"instance": instance, "host": host, "seq": max(seqs),
            "samples": [{"seq": s, "t": 1000.0 + s, "rps": rps, "in_flight": 1, "w": {}} for s in seqs],
            "snapshot": {"master": {"pid": 7, "state": "running", "policy": "rr", "target_workers": 2,
                                    "generation": 0, "uptime": 5.0, "requests_total": 99, "restarts": {"crash": 1},
                                    "reload": {"state": "idle"}},
                         "workers": [{"id": 1, "state": "listening", "in_flight": 1, "rss": 100, "draining": False},
                                     {"id": 2, "state": "online", "in_flight": 0, "rss": 50, "draining": False}]}}


def test_a_replica_answer_is_merged_once_per_sample_and_summarized():
    replicas = Replicas(own_instance="a1")
    replicas.merge("10.0.0.2:9100", dashboard_answer(seqs=(1, 2)), now=2000.0)
    replicas.merge("10.0.0.2:9100", dashboard_answer(seqs=(2, 3)), now=2001.0)
    assert replicas.since("10.0.0.2:9100") == 3
    view = replicas.view("app:9100", [], now=2001.5)
    [replica] = view["replicas"]
    assert replica["self"] and replica["ok"] and replica["host"] == "replica-1"
    assert replica["series"]["t"] == [1001.0, 1002.0, 1003.0]
    assert replica["summary"]["listening"] == 1 and replica["summary"]["workers"] == 2
    assert replica["summary"]["rss"] == 150 and replica["summary"]["restarts"] == {"crash": 1}


def test_a_restarted_replica_starts_a_new_series():
    replicas = Replicas(own_instance="me")
    replicas.merge("r:1", dashboard_answer(instance="old", seqs=(40, 41)), now=1.0)
    replicas.merge("r:1", dashboard_answer(instance="new", seqs=(1,)), now=2.0)
    assert replicas.since("r:1") == 1
    assert replicas.view("r:1", [], 2.0)["replicas"][0]["series"]["t"] == [1001.0]


@pytest.mark.parametrize("spoil", [
    lambda a: a.update(samples=[{"seq": 1, "t": float("inf"), "rps": 1.0, "in_flight": 0}]),
    lambda a: a.update(samples=[{"seq": "1", "t": 1.0, "rps": 1.0, "in_flight": 0}]),
    lambda a: a.update(samples=[{"seq": 1, "t": 1.0, "rps": True, "in_flight": 0}]),
    lambda a: a.update(samples=[{}] * 5000),
    lambda a: a.update(instance=None),
    lambda a: a["snapshot"].update(workers="many"),
    lambda a: a["snapshot"]["master"].update(pid=-1),
    lambda a: a.update(snapshot=None),
])
def test_a_malformed_answer_is_refused_and_changes_nothing(spoil):
    replicas = Replicas(own_instance="me")
    replicas.merge("r:1", dashboard_answer(seqs=(1,)), now=1.0)
    bad = dashboard_answer(seqs=(2,))
    spoil(bad)
    with pytest.raises(BadAnswer):
        replicas.merge("r:1", bad, now=2.0)
    assert replicas.since("r:1") == 1
    # json.dumps of the view never writes Infinity or NaN: what the page parses is valid JSON.
    json.loads(json.dumps(replicas.view("r:1", [], 2.0), allow_nan=False))


def test_a_replica_out_of_dns_for_a_minute_leaves_the_view():
    replicas = Replicas(own_instance="me")
    replicas.merge("r:1", dashboard_answer(), now=1000.0)
    replicas.failed("r:2", "connection refused", now=1000.0)
    replicas.forget_unlisted(now=1030.0)
    assert len(replicas.by_address) == 2
    replicas.merge("r:1", dashboard_answer(seqs=(3,)), now=1061.0)
    replicas.forget_unlisted(now=1061.0)
    assert list(replicas.by_address) == ["r:1"]


def test_resolve_returns_every_address_once_and_names_those_that_do_not_resolve():
    addresses, errors = resolve((("localhost", 9100), ("127.0.0.1", 9100), ("no-such-replica.invalid", 9100)))
    assert ("127.0.0.1", 9100) in addresses and len(addresses) == len(set(addresses))
    assert len(errors) == 1 and errors[0].startswith("no-such-replica.invalid:9100: cannot resolve")


class Misbehaving:
    """A TCP server on loopback that answers each connection with `script(conn)` in a thread."""

    def __init__(self, script):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)
            self.script(conn, self.done)

    def close(self):
        self.done.set()
        self.sock.close()
        self.thread.join(5)


def test_fetch_returns_the_body_of_a_200():
    body = b'{"ok": 1}'
    server = Misbehaving(lambda conn, _: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                                      b"Connection: close\r\n\r\n%s" % (len(body), body)))
    try:
        assert fetch("127.0.0.1", server.port, "/dashboard.json", timeout=2) == body
    finally:
        server.close()


def drip(conn, done):
    """A head promising 1000 bytes, then one byte every 0.1 s: each read is quick, the whole is not."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(50):
        if done.wait(0.1):
            return
        conn.sendall(b"x")


@pytest.mark.parametrize("script, error", [
    (lambda conn, done: done.wait(10), "no whole answer within 0.5 s"),          # accepts, never answers
    (lambda conn, done: drip(conn, done), "no whole answer within 0.5 s"),      # drips: the deadline is for all of it
    (lambda conn, _: conn.sendall(b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n"), "HTTP 503"),
    (lambda conn, _: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
     "connection closed before the whole answer"),
    (lambda conn, _: conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n"), "not an HTTP answer"),
])
def test_fetch_gives_up_within_its_deadline_whatever_the_peer_does(script, error):
    server = Misbehaving(script)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match=error):
            fetch("127.0.0.1", server.port, "/dashboard.json", timeout=0.5)
        assert time.monotonic() - started < 1.5
    finally:
        server.close()


def test_fetch_of_a_closed_port_is_a_fetch_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError):
        fetch("127.0.0.1", port, "/", timeout=0.5)


def test_the_peers_setting_is_host_port_pairs():
    config = load_config(["x:app", "--dashboard-peers", "app:9100, [::1]:9101,app:9100"], environ={})
    assert config.dashboard_peers == (("app", 9100), ("::1", 9101))
    assert load_config(["x:app"], environ={"DASHBOARD_PEERS": "tasks.app:9100"}).dashboard_peers == (("tasks.app", 9100),)
    assert load_config(["x:app"], environ={}).dashboard_peers == ()
    for bad in ("app", "app:", ":9100", "app:0", "app:http", "app:70000"):
        with pytest.raises(ConfigError, match="expected HOST:PORT"):
            load_config(["x:app", "--dashboard-peers", bad], environ={})
