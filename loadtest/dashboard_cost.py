"""`python -m loadtest.dashboard_cost`: what the dashboard costs the master, in CPU.

Starts the master (the demo app, 2 workers, idle) with its dashboard on, and measures the
master's CPU over --seconds with N pages polling /dashboard.json?since=SEQ once a second, as
the page does; then two masters naming each other in DASHBOARD_PEERS, with one page polling
/cluster.json (the aggregate view: the master that is looked at fetches both replicas every
second). Loopback only; prints one line per case.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from loadtest.servers import HOST, RedisServer, Server, free_port, sample
from master.supervisor.peers import fetch


def poll(port: int, path: str, pages: int, seconds: float) -> int:
    """`pages` clients, each GETting `path` once a second for `seconds`; how many answers came."""
    stop = threading.Event()
    answers = []

    def page() -> None:
        seq = 0
        while not stop.is_set():
            began = time.monotonic()
            body = json.loads(fetch(HOST, port, path.format(seq=seq), 2.0))
            seq = body.get("seq", 0)
            answers.append(1)
            stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))

    threads = [threading.Thread(target=page, daemon=True) for _ in range(pages)]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(5)
    return len(answers)


def cpu_share(server: Server, work) -> float:
    """The master's CPU (% of one core) while `work()` runs."""
    before = sample(server.proc.pid)
    work()
    after = sample(server.proc.pid)
    return 100.0 * (after.cpu_s - before.cpu_s) / (after.t - before.t)


def start(redis_url: str, metrics: int, peers: str = "") -> Server:
    env = {"METRICS_BIND": f"{HOST}:{metrics}", **({"DASHBOARD_PEERS": peers} if peers else {})}
    return Server("pycluster", "rr", 2, redis_url, extra_env=env).start()


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the master's CPU for each."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.dashboard_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pages", default="0,1,10,50", help="comma-separated numbers of polling pages")
    args = parser.parse_args(argv)
    redis = RedisServer().start()
    servers: list[Server] = []
    try:
        metrics = free_port()
        servers.append(start(redis.url, metrics))
        time.sleep(2)  # past the start-up's own CPU
        for pages in (int(p) for p in args.pages.split(",")):
            share = cpu_share(servers[0], lambda: poll(metrics, "/dashboard.json?since={seq}", pages, args.seconds))
            print(f"/dashboard.json, {pages:>3} pages at 1 Hz: master {share:5.2f} % of a core", flush=True)
        servers.pop().stop()
        a, b = free_port(), free_port()
        peers = f"{HOST}:{a},{HOST}:{b}"
        servers += [start(redis.url, a, peers), start(redis.url, b, peers)]
        time.sleep(2)
        share = cpu_share(servers[0], lambda: time.sleep(args.seconds))
        print(f"/cluster.json, 2 replicas, nobody looking:   master {share:5.2f} % of a core", flush=True)
        share = cpu_share(servers[0], lambda: poll(a, "/cluster.json", 1, args.seconds))
        print(f"/cluster.json, 2 replicas, 1 page at 1 Hz:   master {share:5.2f} % of a core", flush=True)
    finally:
        for server in servers:
            server.stop()
            server.cleanup()
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
