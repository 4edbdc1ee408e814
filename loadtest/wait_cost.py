"""`docker compose exec app python -m loadtest.wait_cost [N]`: what an acknowledged increment costs.

Run inside an app replica (it uses the replica's own Redis settings: Sentinels, password file).
Times N increments, one after another, three ways: a bare INCR; the exactly-once script without
WAIT; the script followed by WAIT for one replica (what GET /count does). Prints the median and
99th percentile per increment, and what the script and WAIT add.
"""

import statistics
import sys
import time
import uuid

from app import create_app
from app.acknowledged import MARKER_PREFIX
from app.store import get_redis

KEY = "pycluster:wait-cost"


def timed(call, n: int) -> list[float]:
    """Microseconds per call, n calls."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def summary(samples: list[float]) -> str:
    samples = sorted(samples)
    return f"median {statistics.median(samples):7.0f} µs, p99 {samples[int(len(samples) * 0.99) - 1]:7.0f} µs"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        n = int(args[0]) if args else 2000
    except ValueError:
        print(f"usage: python -m loadtest.wait_cost [N], got {args[0]!r}", file=sys.stderr)
        return 2
    if not 1 <= n <= 100_000:
        print("N must be from 1 to 100000", file=sys.stderr)
        return 2
    app = create_app()
    with app.app_context():
        client = get_redis()
        replicas = getattr(client, "wait_replicas", 0)
        if not replicas:
            print("this replica does not wait for Redis replicas (REDIS_SENTINELS unset or REDIS_WAIT_REPLICAS=0)",
                  file=sys.stderr)
            return 2
        bare = timed(lambda: client.execute_command("INCR", KEY), n)
        client.configure(0, client.wait_timeout_ms, client.wait_strict)
        script = timed(lambda: client.incr_once(KEY, MARKER_PREFIX + uuid.uuid4().hex), n)
        client.configure(replicas, client.wait_timeout_ms, client.wait_strict)
        acknowledged = timed(lambda: client.incr_once(KEY, MARKER_PREFIX + uuid.uuid4().hex), n)
        client.delete(KEY)
    print(f"{n} increments each, one at a time, from this replica:")
    print(f"  INCR                   {summary(bare)}")
    print(f"  script (exactly once)  {summary(script)}")
    print(f"  script + WAIT {replicas} replica {summary(acknowledged)}")
    print(f"  WAIT adds {statistics.median(acknowledged) - statistics.median(script):.0f} µs, the script "
          f"{statistics.median(script) - statistics.median(bare):.0f} µs (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
