"""Monitoring workers: GET_STATS on an interval, a table of requests, memory and uptime.

    python examples/monitoring.py      # a table every INTERVAL seconds (default 5)
"""
import os
import time

from master import cluster

PORT = int(os.environ.get("PORT", "3000"))
NUM_WORKERS = int(os.environ.get("WORKERS", os.cpu_count() or 1))
INTERVAL = float(os.environ.get("INTERVAL", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "0"))  # stop after this many tables (0: never)

if cluster.is_primary:
    stats = {}
    printed = {"rounds": 0}

    def on_message(worker, msg):
        """Keep each worker's latest STATS."""
        if msg.get("cmd") == "STATS":
            stats[worker.id] = msg

    def print_table():
        """Print what the workers reported last, then ask again."""
        if stats:
            print(f"{'ID':>3} {'PID':>7} {'REQUESTS':>9} {'RSS MiB':>8} {'UPTIME s':>9}", flush=True)
            for worker_id, s in sorted(stats.items()):
                print(f"{worker_id:>3} {s['pid']:>7} {s['requests']:>9} {s['rss'] / 2**20:>8.1f} {s['uptime']:>9.1f}",
                      flush=True)
            printed["rounds"] += 1
            if ROUNDS and printed["rounds"] >= ROUNDS:
                cluster.disconnect()
                return
        cluster.broadcast({"cmd": "GET_STATS"})

    cluster.on("message", on_message)
    cluster.on("listening", lambda w, a: w.send({"cmd": "GET_STATS"}))
    for _ in range(NUM_WORKERS):
        cluster.fork()
    cluster.call_every(INTERVAL, print_table)
    cluster.run()
else:
    from master.core.procstats import rss_bytes

    started = time.monotonic()
    served = {"requests": 0}

    def on_message(msg):
        """Answer GET_STATS with this worker's figures."""
        if msg.get("cmd") == "GET_STATS":
            cluster.worker.send({"cmd": "STATS", "pid": os.getpid(), "requests": served["requests"],
                                 "rss": rss_bytes(), "uptime": time.monotonic() - started})

    cluster.worker.on("message", on_message)

    def app(environ, start_response):
        """Count and answer."""
        served["requests"] += 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))])
        return [f"Hello from worker {os.getpid()}\n".encode()]

    cluster.serve(app, bind=f"0.0.0.0:{PORT}")
