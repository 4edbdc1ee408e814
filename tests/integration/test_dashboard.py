"""The dashboard's JSON and page from a real master under load, what it costs the master, and the
aggregate view across two real masters on loopback (--dashboard-peers)."""
from __future__ import annotations

import json
import socket
import threading
import time

from support import cpu_seconds, free_port, get, wait_for
from support_ui import dashboard_env, dashboard_json, metrics_port, wait_rates

from loadtest.loadgen import LoadGen
from master.supervisor.peers import fetch

# Each request waits 20 ms in the worker: steady, bounded load that leaves the two cores to the test.
LOAD_PATH = "/sleep?s=0.02"


def load(master, seconds=30.0, concurrency=4):
    return LoadGen("127.0.0.1", master.port, [LOAD_PATH], concurrency=concurrency, keepalive=True,
                   duration=seconds, max_requests=20_000).start()


def test_the_json_shows_each_worker_of_ctl_status_with_its_rate_under_load(master):
    m = master(workers=2, env=dashboard_env())
    gen = load(m)
    try:
        body = wait_rates(m)
        status = m.status()
        assert [w["pid"] for w in body["snapshot"]["workers"]] == [w["pid"] for w in status["workers"]]
        assert body["snapshot"]["master"]["policy"] == status["master"]["policy"]
        latest = body["samples"][-1]
        assert latest["rps"] == round(sum(v[0] for v in latest["w"].values()), 1)
        assert all(v[2] > 0 for v in latest["w"].values())  # RSS
        # Up to date: only the newest samples come back, never one the client already has.
        recent = dashboard_json(m, f"?since={body['seq']}")
        assert not recent["full"] and all(s["seq"] > body["seq"] - 10 for s in recent["samples"])
    finally:
        gen.stop()
        gen.join()


def test_the_page_and_its_assets_are_served_and_bad_queries_get_a_clear_400(master):
    m = master(workers=1, env=dashboard_env())
    base = f"http://127.0.0.1:{metrics_port(m)}"
    page = get(base + "/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for asset in ("dashboard/app.js", "dashboard/app.css", "dashboard/uPlot.iife.min.js",
                  "dashboard/uPlot.min.css", "dashboard/uPlot.LICENSE"):
        assert f'{asset}"' in page.text or asset.endswith("LICENSE")
        assert get(f"{base}/{asset}").status_code == 200, asset
    bad = get(base + "/dashboard.json?since=yesterday")
    assert bad.status_code == 400 and "since must be a sample number" in bad.json()["error"]
    assert get(base + "/dashboard.json?since=1;drop").status_code == 400
    assert get(base + "/metrics").status_code == 200  # still there beside it


def test_twenty_pages_polling_once_a_second_cost_the_master_little_cpu(master):
    m = master(workers=2, env=dashboard_env())
    port = metrics_port(m)
    stop = threading.Event()
    answered = []

    def page():
        seq = 0
        while not stop.is_set():
            began = time.monotonic()
            seq = json.loads(fetch("127.0.0.1", port, f"/dashboard.json?since={seq}", 2.0))["seq"]
            answered.append(seq)
            stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))

    pages = [threading.Thread(target=page) for _ in range(20)]
    before, started = cpu_seconds(m.pid), time.monotonic()
    for thread in pages:
        thread.start()
    stop.wait(8.0)
    stop.set()
    for thread in pages:
        thread.join(5)
    share = (cpu_seconds(m.pid) - before) / (time.monotonic() - started)
    assert len(answered) >= 20 * 7
    assert share < 0.05, f"the master used {share:.1%} of a core for 20 dashboards"


def blackhole():
    """A listener that accepts connections and never answers (a hung replica)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_one_replica_shows_every_replica_and_a_dead_or_hung_one_never_stalls_it(master):
    port_a, port_b, hung = free_port(), free_port(), blackhole()
    # Names, not only addresses: each entry is resolved as the DNS name of a compose service would be.
    peers = f"localhost:{port_a},127.0.0.1:{port_b},localhost:{hung.getsockname()[1]}"
    a = master(workers=1, env=dashboard_env(port_a, DASHBOARD_PEERS=peers))
    b = master(workers=2, env=dashboard_env(port_b, DASHBOARD_PEERS=peers))
    gen_a, gen_b = load(a, 40, 2), load(b, 40, 2)
    try:
        def cluster():
            return json.loads(fetch("127.0.0.1", port_a, "/cluster.json", 2.0))

        def both_serving():
            view = cluster()
            ok = {r["address"]: r for r in view["replicas"] if r["ok"] and r["series"]["rps"]
                  and (r["series"]["rps"][-1] or 0) > 0}
            return view if {f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"} <= set(ok) else None

        view = wait_for(both_serving, 30, 0.3, "both replicas in A's aggregate view")
        by_address = {r["address"]: r for r in view["replicas"]}
        assert by_address[f"127.0.0.1:{port_a}"]["self"] and not by_address[f"127.0.0.1:{port_b}"]["self"]
        assert by_address[f"127.0.0.1:{port_b}"]["summary"]["listening"] == 2
        assert by_address[f"127.0.0.1:{port_b}"]["summary"]["pid"] == b.pid
        hung_row = by_address[f"127.0.0.1:{hung.getsockname()[1]}"]
        assert not hung_row["ok"] and "no whole answer" in hung_row["error"]
        assert len(view["replicas"]) == 3  # localhost and 127.0.0.1 are one replica each, not two
        b.kill_all()
        down = wait_for(lambda: next((r for r in cluster()["replicas"]
                                      if r["address"] == f"127.0.0.1:{port_b}" and not r["ok"]), None), 10, 0.3,
                        "B shown as down")
        assert down["error"]
        # The poller never blocks A's loop: with a hung peer and a dead one, /ready stays quick.
        slowest = max(_timed(lambda: fetch("127.0.0.1", port_a, "/ready", 2.0)) for _ in range(20))
        assert slowest < 0.25, f"/ready took {slowest:.3f} s while A polled its peers"
        assert get(a.url + "/").status_code == 200
    finally:
        hung.close()
        for gen in (gen_a, gen_b):
            gen.stop()
            gen.join()


def _timed(call):
    began = time.monotonic()
    call()
    return time.monotonic() - began
