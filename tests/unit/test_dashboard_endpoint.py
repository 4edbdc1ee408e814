"""GET /dashboard.json: the status snapshot plus the history ring, from a real Arbiter and Primary
(the process starter and clock are the fakes of test_arbiter.py), through the real AdminServer."""
from __future__ import annotations

import json
import signal
import socket

import pytest
from test_arbiter import Cluster, started

from master.supervisor import dashboard
from master.supervisor.admin_http import AdminServer
from master.supervisor.dashboard import RECENT, Feed, parse_since


@pytest.fixture
def served():
    """A two-worker cluster whose workers are listening, and a feed over it (wall clock 1000 + turns)."""
    c = Cluster(workers=2)
    for process in list(started):
        c.listen(process)
    wall = {"now": 1000.0}
    feed = Feed(c.arbiter, wall=lambda: wall["now"])
    yield c, feed, wall
    c.close()


def beat(c, process, requests, advance=1.0):
    process.say("heartbeat", requests=requests, in_flight=2, rss=30 << 20)
    c.turn(advance=advance)


def answer(feed, query=""):
    status, content_type, body = feed.handle(query)
    return status, content_type, json.loads(body)


def test_the_answer_is_the_status_snapshot_plus_the_ring_with_a_rate_per_worker(served):
    c, feed, wall = served
    one, two = started[0], started[1]
    for second, (a, b) in enumerate([(0, 0), (100, 50), (300, 150)]):
        beat(c, one, a, advance=0)
        beat(c, two, b, advance=0)
        c.clock.now += 1.0
        wall["now"] += 1.0
        feed.sample()
    status, content_type, body = answer(feed)
    assert status == 200 and content_type == "application/json"
    assert body["snapshot"] == json.loads(json.dumps(c.arbiter.snapshot() | {"master": body["snapshot"]["master"]}))
    assert [w["pid"] for w in body["snapshot"]["workers"]] == [one.pid, two.pid]
    assert body["snapshot"]["master"]["target_workers"] == 2
    assert body["fields"] == ["rps", "in_flight", "rss"] and body["full"] is True
    ids = [str(w["id"]) for w in body["snapshot"]["workers"]]
    latest = body["samples"][-1]
    assert latest["w"][ids[0]] == [200.0, 2, 30 << 20]
    assert latest["w"][ids[1]] == [100.0, 2, 30 << 20]
    assert latest["rps"] == 300.0 and latest["target"] == 2
    assert [s["seq"] for s in body["samples"]] == [1, 2, 3] and body["seq"] == 3


def test_a_client_that_is_up_to_date_gets_only_the_newest_samples(served):
    c, feed, wall = served
    for _ in range(RECENT + 5):
        c.turn(advance=1.0)
        feed.sample()
    _, _, full = answer(feed, "since=0")
    _, _, recent = answer(feed, f"since={feed.history.seq - 1}")
    assert len(full["samples"]) == RECENT + 5 and full["full"]
    assert len(recent["samples"]) == RECENT and not recent["full"]
    assert recent["samples"][-1]["seq"] == feed.history.seq
    # Too far behind, or ahead (a restarted master): the whole ring again.
    _, _, behind = answer(feed, "since=2")
    _, _, ahead = answer(feed, "since=9999")
    assert behind["full"] and ahead["full"]


def test_each_body_is_encoded_once_per_sample(served):
    c, feed, _ = served
    feed.sample()
    first = feed.handle("")[2]
    assert feed.handle("")[2] is first
    assert feed.handle("since=0")[2] is first
    feed.sample()
    assert feed.handle("")[2] is not first


def test_a_crash_is_an_event_with_its_reason_and_the_replacement_gets_a_series(served):
    c, feed, _ = served
    feed.sample()
    victim = started[0]
    victim.exit(-signal.SIGKILL)
    c.turn()
    c.listen(started[2])
    beat(c, started[2], 0)
    beat(c, started[2], 40, advance=0.5)
    feed.sample()
    _, _, body = answer(feed)
    crash = [e for e in body["events"] if e["kind"] == "exit"]
    assert len(crash) == 1 and crash[0]["reason"] == "crash" and crash[0]["verdict"] == "respawn"
    new_id = str(body["snapshot"]["workers"][-1]["id"])
    assert body["snapshot"]["workers"][-1]["pid"] == started[2].pid
    assert body["samples"][-1]["w"][new_id][0] > 0


@pytest.mark.parametrize("query, message", [
    ("since=abc", "since must be a sample number"),
    ("since=-1", "since must be a sample number"),
    ("since=1e400", "since must be a sample number"),
    ("since=9999999999999999", "since must be a sample number"),
    ("since=", "since must be a sample number"),
    ("since=1&since=2", "since given more than once"),
    ("x=1", "unknown parameter 'x'"),
    ("since", "malformed query string"),
    ("a=1&&b=2", "malformed query string"),
    ("a=1&b=2&c=3&d=4&e=5", "malformed query string"),
])
def test_a_bad_query_string_is_a_400_that_says_what_is_wrong(served, query, message):
    _, feed, _ = served
    feed.sample()
    status, content_type, body = answer(feed, query)
    assert status == 400 and content_type == "application/json"
    assert message in body["error"]


def test_parse_since_reads_a_plain_sample_number():
    assert parse_since("") == 0
    assert parse_since("since=42") == 42


def exchange(loop, port, path):
    """One GET against the AdminServer, turning the (test-driven) loop until the answer is whole."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    client.setblocking(False)
    data = b""
    for _ in range(2000):
        loop.run_once(max_wait=0.005)
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        data += chunk
    client.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), body


def test_the_admin_endpoint_serves_the_json_with_its_query_and_the_page(served):
    c, _, _ = served
    admin = AdminServer("127.0.0.1:0", c.loop)
    assert admin.start()
    try:
        board = dashboard.install(admin, c.arbiter)
        status, head, body = exchange(c.loop, admin.port, "/dashboard.json?since=0")
        assert status == 200 and json.loads(body)["instance"] == board.feed.instance
        status, _, body = exchange(c.loop, admin.port, "/dashboard.json?since=oops")
        assert status == 400 and b"since must be a sample number" in body
        status, head, body = exchange(c.loop, admin.port, "/")
        assert status == 200 and "text/html" in head and b"dashboard/app.js" in body
        for asset in ("app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"):
            assert exchange(c.loop, admin.port, f"/dashboard/{asset}")[0] == 200, asset
        status, _, body = exchange(c.loop, admin.port, "/cluster.json")
        assert status == 404 and b"--dashboard-peers" in body
        board.close()
    finally:
        admin.close()


def test_missing_page_files_turn_only_the_dashboard_off(monkeypatch):
    monkeypatch.setattr(dashboard, "ASSET_DIR", "no-such-folder")
    routes = dashboard.asset_routes()
    status, _, body = routes["/"]()
    assert status == 503 and b"package data" in body
