"""The mixed keep-alive profile, every server in turn, over several rounds.

The profile is CPU-bound, so each server's rate is the machine's speed over what a request costs
it, and on a shared 2-CPU machine that speed drifts over the half hour a bench takes: the same rr
code cost 1,492 µs per request in one full bench and 1,395 µs in another (sync 1,556 and 1,509),
so one cell per server, measured minutes apart, moved the ratio to gunicorn from 1.11× to 1.08×
(docs/bench, committed runs). Here every server is measured once per round, fresh and in the same
order, so each round sets all of them in the same stretch of the machine's time, and a server's
figure is its median round. The slowest request and the timeouts are the worst over all rounds.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable

from loadtest.servers import Server

KEEP_WORST = ("max_ms", "over_1s")  # a request slower than the bar in any round counts
KEEP_SUM = ("timeouts", "errors_total", "requests")


def combine(rounds: list[dict]) -> dict:
    """One server's record from its rounds: the round with the median rate (its CPU figures and
    all), the median p99, the slowest request and the timeouts over every round, and each round's
    figures listed. With an even count the middle taken is the less flattering one."""
    if not rounds:
        raise ValueError("no rounds to combine")
    ordered = sorted(rounds, key=lambda r: r.get("rps") or 0)
    median = dict(ordered[(len(ordered) - 1) // 2])  # the lower middle of an even count: never flattering
    for key in KEEP_WORST:
        values = [r[key] for r in rounds if r.get(key) is not None]
        median[key] = max(values) if values else None
    for key in KEEP_SUM:
        median[key] = sum(r.get(key) or 0 for r in rounds)
    p99s = [r["p99_ms"] for r in rounds if r.get("p99_ms") is not None]
    median["p99_ms"] = statistics.median_high(p99s) if p99s else None  # the higher middle: never flattering
    median["rounds"] = [{"rps": r.get("rps"), "p99_ms": r.get("p99_ms"), "max_ms": r.get("max_ms"),
                         "worker_cpu_us_per_req": r.get("worker_cpu_us_per_req")} for r in rounds]
    return median


def measure(pairs: list[tuple[str, str]], n: int, redis_url: str, rounds: int,
            measure_one: Callable[[Server], dict], progress: Any, line: Callable[[Server, dict], str]
            ) -> tuple[list[dict], list[str]]:
    """`rounds` rounds of one fresh server per (server, policy), in turn: one combined record each,
    and the report's notes. A round that fails to start or to finish is left out, and a note says so."""
    got: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
    notes: list[str] = []

    def failed(server: str, policy: str, index: int, what: str) -> None:
        text = f"{server} {policy} mixed keep-alive round {index + 1} of {rounds} {what}; that round is left out."
        notes.append(text)
        progress.step(text)

    for index in range(rounds):
        for server, policy in pairs:
            progress.start(f"{server}/{policy} N={n} mixed keep-alive, round {index + 1} of {rounds}")
            try:
                srv = Server(server, policy, n, redis_url).start()
            except (RuntimeError, TimeoutError) as exc:
                failed(server, policy, index, f"failed to start ({str(exc).strip().splitlines()[0]})")
                continue
            try:
                record = measure_one(srv)
            except Exception as exc:  # noqa: BLE001 - one failed round must not lose the others
                failed(server, policy, index, f"stopped: {type(exc).__name__}: {exc}")
                continue
            finally:
                srv.stop()
                srv.cleanup()
            got[(server, policy)].append(record)
            progress.step(f"{line(srv, record)}  (round {index + 1})")
    return [combine(records) for records in got.values() if records], notes
