"""How evenly a server spreads requests over its workers, read from the X-Worker-Pid header."""

from loadtest.loadgen import LoadGen, kinds
from loadtest.servers import HOST
from loadtest.stats import fairness_summary, shares

# mode -> (client threads, keep-alive): new connections one at a time, new connections many at a
# time, and long-lived connections (where a policy can only choose once, per connection).
MODES = {
    "sequential": (1, False),
    "concurrent": (16, False),
    "keepalive": (32, True),
}
# Keep-alive requests per worker follow how fast each worker answers its 16 connections, and the
# Python load generator shares the CPUs: over 2,000 requests (0.4 s) a worker that happens to share
# its CPU with the generator serves 40% though both hold 16 connections (Jain 0.96, measured). Over
# 10,000 (2 s) the kernel has not always moved them about: rr read 0.9923-0.9999 in 6 runs here and
# 0.9876 and 0.9887 in two full benches, shared 0.9943-0.9992. Over 30,000 (6 s) rr read
# 0.9959-0.9995 in 4 of 4 runs, shared 0.9980-0.9999 (2026-12-02).
KEEPALIVE_MIN_REQUESTS = 30_000


def requests_for(mode: str, requests: int, quick: bool = False) -> int:
    """How many requests a mode sends: the plan's count, and at least KEEPALIVE_MIN_REQUESTS keep-alive
    ones outside quick runs."""
    if mode == "keepalive" and not quick:
        return max(requests, KEEPALIVE_MIN_REQUESTS)
    return requests


def measure(port: int, worker_pids: list[int], mode: str, requests: int, max_seconds: float) -> dict:
    """Send `requests` GET / in this mode (bounded by max_seconds) and summarise the spread."""
    threads, keepalive = MODES[mode]
    gen = LoadGen(HOST, port, ["/"], concurrency=threads, keepalive=keepalive, duration=max_seconds,
                  max_requests=requests, timeout=5.0)
    records = gen.run()
    answered = [r.pid for r in records if r.kind == "ok" and r.pid]
    counts = shares(answered, [str(p) for p in worker_pids], len(worker_pids))
    return {"mode": mode, "connections": "new" if not keepalive else f"{threads} keep-alive",
            "failures": {k: v for k, v in kinds(records).items() if k != "ok"},
            **fairness_summary(counts)}
