"""The HTTP engine issue's part of docs/BENCHMARKS.md: its goals, judged in one run (docs/HTTP.md)."""

GOAL_CPU_VS_FLASK = 1.6  # worker CPU per / request, over Flask's in-process cost for /
GOAL_VS_GRANIAN = 1.1  # / keep-alive and /count req/s, over granian's
GOAL_P99_VS_GRANIAN = 1.2  # / keep-alive p99, over granian's
GOAL_CLOSE_VS_SYNC = 1.0  # / with a new connection per request, over gunicorn sync


def _throughput(runs: list[dict], server: str, policy: str, n: int, endpoint: str, conn: str = "keepalive"):
    return next((r for r in runs if r.get("kind") == "throughput" and r["server"] == server and r["policy"] == policy
                 and r["workers"] == n and r["endpoint"] == endpoint and r.get("conn", "keepalive") == conn
                 and r.get("rps")), None)


def _goal(target: str, ratio: float, limit: float, detail: str, at_most: bool = False) -> dict:
    return {"policy": "rr", "target": target, "measured": f"{ratio:.2f}× ({detail})",
            "met": ratio <= limit if at_most else ratio >= limit}


def targets(runs: list[dict], n: int) -> list[dict]:
    """The engine goals at N workers: pycluster rr against Flask in-process, granian and gunicorn sync."""
    rows = []
    ours, granian = _throughput(runs, "pycluster", "rr", n, "/"), _throughput(runs, "granian", "wsgi", n, "/")
    flask = next((r for r in runs if r.get("kind") == "ceiling" and r["endpoint"] == "/" and r.get("rps_per_core")),
                 None)
    if ours and flask and ours.get("worker_cpu_us_per_req"):
        flask_us = 1e6 / flask["rps_per_core"]
        rows.append(_goal(f"worker CPU per / request ≤ {GOAL_CPU_VS_FLASK}× Flask in-process",
                          ours["worker_cpu_us_per_req"] / flask_us, GOAL_CPU_VS_FLASK,
                          f"{ours['worker_cpu_us_per_req']:.0f} vs {flask_us:.0f} µs", at_most=True))
    if ours and granian:
        rows.append(_goal(f"/ keep-alive ≥ {GOAL_VS_GRANIAN}× granian at N={n}", ours["rps"] / granian["rps"],
                          GOAL_VS_GRANIAN, f"{ours['rps']:,.0f} vs {granian['rps']:,.0f} req/s"))
        if ours.get("p99_ms") and granian.get("p99_ms"):
            rows.append(_goal(f"/ keep-alive p99 ≤ {GOAL_P99_VS_GRANIAN}× granian's", ours["p99_ms"] / granian["p99_ms"],
                              GOAL_P99_VS_GRANIAN, f"{ours['p99_ms']} vs {granian['p99_ms']} ms", at_most=True))
    count, granian_count = _throughput(runs, "pycluster", "rr", n, "/count"), _throughput(runs, "granian", "wsgi", n,
                                                                                          "/count")
    if count and granian_count:
        rows.append(_goal(f"/count ≥ {GOAL_VS_GRANIAN}× granian", count["rps"] / granian_count["rps"], GOAL_VS_GRANIAN,
                          f"{count['rps']:,.0f} vs {granian_count['rps']:,.0f} req/s"))
    close, sync = _throughput(runs, "pycluster", "rr", n, "/", "close"), _throughput(runs, "gunicorn", "sync", n, "/",
                                                                                     "close")
    if close and sync:
        rows.append(_goal(f"/ new connection per request ≥ {GOAL_CLOSE_VS_SYNC}× gunicorn sync",
                          close["rps"] / sync["rps"], GOAL_CLOSE_VS_SYNC,
                          f"{close['rps']:,.0f} vs {sync['rps']:,.0f} req/s"))
    return rows


