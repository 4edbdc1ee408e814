"""Capacity over time with keep-alive clients: after a worker is SIGKILLed, at start-up under load,
and after a scale-up. The rate per half second and each worker's share of it, judged against the
balancing issue's goal: back to ≥ 0.9 of the reference rate within 3 s, with no worker above 60%.

Keep-alive clients pin to the worker they first reached, so these are the runs that show whether
a server balances load or only connections. The clients are LoadGen threads (every answer's
worker pid and time recorded), the work 10 ms of CPU per request.
"""

import os
import random
import signal
import time

from loadtest.loadgen import LoadGen
from loadtest.servers import HOST, Server, free_port
from loadtest.stats import jain_index

PATH = "/work?ms=10"
CLIENTS = 16
BUCKET = 0.5  # seconds per point of the timeline
GOAL_RATE = 0.9  # of the reference rate
GOAL_SHARE = 0.6  # the most one worker may carry
GOAL_WITHIN = 3.0  # seconds after the event
HOLD = 2.0  # how long the goal must hold once reached


def buckets(records, t0: float, end: float) -> list[dict]:
    """Answers per BUCKET seconds from t0: {"t", "rate", "by_pid", "failures"}."""
    count = int((end - t0) / BUCKET)  # whole buckets only: a partial last one would look like a dip
    out = [{"t": round(i * BUCKET, 2), "ok": 0, "failures": 0, "by_pid": {}} for i in range(count)]
    for r in records:
        i = int((r.end - t0) / BUCKET)
        if not 0 <= i < count:
            continue
        if r.kind == "ok":
            out[i]["ok"] += 1
            out[i]["by_pid"][r.pid] = out[i]["by_pid"].get(r.pid, 0) + 1
        else:
            out[i]["failures"] += 1
    for b in out:
        b["rate"] = b.pop("ok") / BUCKET
    return out


def rate_between(points: list[dict], start: float, end: float) -> float:
    """Mean answers per second over the buckets that start in [start, end)."""
    sel = [b["rate"] for b in points if start <= b["t"] < end]
    return sum(sel) / len(sel) if sel else 0.0


def top_share(points: list[dict], start: float, end: float) -> float:
    """The largest share one worker had of the answers in [start, end)."""
    per_pid: dict[str, int] = {}
    for b in points:
        if start <= b["t"] < end:
            for pid, n in b["by_pid"].items():
                per_pid[pid] = per_pid.get(pid, 0) + n
    total = sum(per_pid.values())
    return max(per_pid.values()) / total if total else 1.0


def recovery(points: list[dict], event: float, reference: float) -> float | None:
    """Seconds after `event` until the rate is ≥ GOAL_RATE × reference and no worker above GOAL_SHARE,
    both holding for HOLD seconds; None if that never happens in the run."""
    last = points[-1]["t"] if points else 0.0
    for b in points:
        t = b["t"]
        if t < event or t + HOLD > last + BUCKET:
            continue
        window = [p for p in points if t <= p["t"] < t + HOLD]
        if all(p["rate"] >= GOAL_RATE * reference for p in window) and top_share(points, t, t + HOLD) <= GOAL_SHARE:
            return round(t - event, 2)
    return None


def summary(scenario: str, srv: Server, records, t0: float, event: float, reference: tuple[float, float]) -> dict:
    """The timeline and its verdict; `reference` is the (start, end) window the goal's rate comes from."""
    end = max((r.end for r in records), default=t0)
    points = buckets(records, t0, end)
    ref = rate_between(points, *reference)
    back = recovery(points, event, ref)
    return {"kind": "capacity", "scenario": scenario, "server": srv.server, "policy": srv.policy,
            "workers": srv.workers, "clients": CLIENTS, "path": PATH, "event_s": round(event, 2),
            "reference_rps": round(ref, 1), "recovered_s": back,
            "met": back is not None and back <= GOAL_WITHIN,
            "after_rps": round(rate_between(points, event + GOAL_WITHIN, event + GOAL_WITHIN + HOLD), 1),
            "top_share_after": round(top_share(points, event + GOAL_WITHIN, event + GOAL_WITHIN + HOLD), 3),
            # Refusals before a starting server listens are the clients knocking early, not failures.
            "failures": sum(1 for r in records if r.kind not in ("ok", "refused") or
                            (r.kind == "refused" and r.start - t0 >= event + GOAL_WITHIN)),
            "jain": round(jain_index(list(_per_pid(records).values())), 4) if records else None,
            "timeline": points}


def _per_pid(records) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        if r.kind == "ok" and r.pid:
            counts[r.pid] = counts.get(r.pid, 0) + 1
    return counts


def crash(srv: Server, seconds: float = 12.0, kill_at: float = 4.0) -> dict:
    """Keep-alive load, one worker SIGKILLed at `kill_at`; the reference is the rate before."""
    gen = LoadGen(HOST, srv.port, [PATH], concurrency=CLIENTS, keepalive=True, duration=seconds,
                  timeout=5.0).start()
    _sleep_until(gen.t0 + kill_at)
    victims = srv.worker_pids()
    if victims:
        os.kill(random.choice(victims), signal.SIGKILL)
    records = gen.join()
    result = summary("crash", srv, records, gen.t0, kill_at, (1.0, kill_at))
    try:
        srv.wait_workers(srv.workers, 15)  # replaced before the next measurement
    except TimeoutError as exc:  # the server did not replace it: that is the result, not a harness error
        result["not_replaced"] = str(exc)
    return result


def startup(make_server, seconds: float = 12.0) -> tuple[Server, dict]:
    """Clients already knocking when the server starts; the reference is the rate at the end."""
    port = free_port()
    gen = LoadGen(HOST, port, [PATH], concurrency=CLIENTS, keepalive=True, duration=seconds,
                  timeout=5.0, pause_on_refused=0.02).start()
    started = time.monotonic() - gen.t0
    srv = make_server(port)
    records = gen.join()
    return srv, summary("startup", srv, records, gen.t0, started, (seconds - 3.0, seconds))


def scale_up(srv: Server, scale, seconds: float = 12.0, at: float = 4.0) -> dict:
    """Keep-alive load on N workers, one more added at `at` (`scale(srv)`); the reference is the rate
    at the end, with N + 1."""
    gen = LoadGen(HOST, srv.port, [PATH], concurrency=CLIENTS, keepalive=True, duration=seconds,
                  timeout=5.0).start()
    _sleep_until(gen.t0 + at)
    scale(srv)
    records = gen.join()
    return summary("scale-up", srv, records, gen.t0, at, (seconds - 3.0, seconds))


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))
