"""Load-balancing strategies: choose rr, shared or reuseport and see the distribution.

    python examples/load_balancing.py rr         # or: shared, reuseport
    python examples/load_balancing.py rr --requests 200

The primary sends N sequential requests, each on a new connection, once every worker is
listening, and prints how many each worker served.
"""
import argparse
import os
import sys
import threading
import urllib.request
from collections import Counter

from master import cluster

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("policy", nargs="?", default="rr", help="rr | shared | reuseport")
parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
parser.add_argument("--requests", type=int, default=400)
parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
options = parser.parse_args()


def app(environ, start_response):
    """Answer with the pid, so the client can count."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))])
    return [str(os.getpid()).encode()]


def measure():
    """Run the requests from a thread, so the primary's loop keeps handing out connections."""
    counts = Counter()
    for _ in range(options.requests):
        with urllib.request.urlopen(f"http://127.0.0.1:{options.port}/", timeout=5) as response:
            counts[response.headers["X-Worker-Pid"]] += 1
    print(f"policy {cluster.scheduling_policy}: {options.requests} new connections", flush=True)
    for pid, count in sorted(counts.items()):
        print(f"  worker {pid}: {count:4d} ({100 * count / options.requests:.1f}%)", flush=True)
    cluster.call_later(0, cluster.disconnect)


if cluster.is_primary:
    try:
        cluster.scheduling_policy = options.policy
    except ValueError as exc:
        sys.exit(f"load_balancing.py: {exc}")
    listening = []

    @cluster.on("listening")
    def on_listening(worker, address):
        """Start measuring once every worker listens."""
        listening.append(worker.id)
        if len(listening) == options.workers:
            threading.Thread(target=measure, daemon=True).start()

    for _ in range(options.workers):
        cluster.fork()
    cluster.run()
else:
    cluster.serve(app, bind=f"127.0.0.1:{options.port}")
