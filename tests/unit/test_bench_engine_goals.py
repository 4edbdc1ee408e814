"""The bench's HTTP engine goals (loadtest/engine_report.py) and its granian peer."""
from loadtest.bench import servers_to_run
from loadtest.engine_report import targets as engine_goals
from loadtest.servers import Server


def _tput(server, policy, endpoint, rps, p99=10.0, conn="keepalive", cpu=None):
    return {"kind": "throughput", "server": server, "policy": policy, "workers": 2, "endpoint": endpoint,
            "conn": conn, "rps": rps, "p99_ms": p99, "worker_cpu_us_per_req": cpu}


RUNS = [
    {"kind": "ceiling", "endpoint": "/", "rps_per_core": 10_000.0},  # 100 µs per request in-process
    _tput("pycluster", "rr", "/", 11_000, p99=12.0, cpu=150.0),
    _tput("granian", "wsgi", "/", 10_000, p99=10.0),
    _tput("pycluster", "rr", "/count", 2_000),
    _tput("granian", "wsgi", "/count", 2_000),
    _tput("pycluster", "rr", "/", 5_000, conn="close"),
    _tput("gunicorn", "sync", "/", 4_000, conn="close"),
]


def test_each_goal_is_judged_from_the_same_run():
    rows = engine_goals(RUNS, 2)
    assert [r["met"] for r in rows] == [True, True, True, False, True]  # CPU 1.5×, 1.1×, p99 1.2×, 1.0×, 1.25×
    assert rows[0]["measured"].startswith("1.50×")


def test_a_goal_without_its_peer_is_not_judged():
    assert engine_goals([r for r in RUNS if r.get("server") != "granian"], 2) == [
        row for row in engine_goals(RUNS, 2) if "granian" not in row["target"]]


def test_granian_serves_the_same_app_over_wsgi_with_n_workers():
    argv = Server("granian", "wsgi", 2, "redis://x", port=8123).command()
    assert argv[argv.index("--interface") + 1] == "wsgi" and argv[argv.index("--workers") + 1] == "2"
    assert argv[-1] == "app.wsgi:app" and "8123" in argv
    assert ("granian", "wsgi") in servers_to_run(None)[0]
