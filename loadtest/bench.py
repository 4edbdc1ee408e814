"""`python -m loadtest.bench [--quick]`: our master (each policy) against gunicorn (each class), one machine.

Throughput and latency with wrk on `/`, `/work`, `/count` for workers = 1..CPUs, the mixed profile with
Locust, fairness per policy, loss when a worker is SIGKILLed, master CPU/RSS, and Flask's in-process
ceiling. Writes docs/bench/results.json, docs/bench/*.png and docs/BENCHMARKS.md. Loopback only.
"""

import argparse
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest import fairness, mixed, report, wrk
from loadtest.loadgen import LoadGen, kinds
from loadtest.servers import (GUNICORN_CLASSES, HOST, POLICIES, REPO, RedisServer, Server, app_available,
                              cpu_percent, master_available, sample)
from loadtest.stats import add_derived

ENDPOINTS = ("/", "/work", "/count")


@dataclass(frozen=True)
class Plan:
    """How long and how hard each measurement runs."""

    quick: bool
    workers: tuple[int, ...]
    duration_s: float          # per wrk run
    warmup_s: float
    connections: int
    fairness_requests: int     # per mode; the issue asks for ≥ 2,000
    loss_s: float
    mixed_s: int
    mixed_users: int
    mixed_everywhere: bool     # all servers, or only pycluster rr and gunicorn gevent
    close_every_n: bool        # new-connection runs at every N, or only at N = CPUs
    ceiling_s: float


def make_plan(quick: bool, cpus: int, workers: list[int] | None) -> Plan:
    """The full plan, or the quick one that fits in two minutes."""
    if quick:
        return Plan(True, tuple(workers or sorted({1, cpus})), 1, 0, 32, 500, 2.0, 4, 20, False, False, 0.5)
    return Plan(False, tuple(workers or range(1, cpus + 1)), 10, 2, 32, 2000, 6.0, 15, 50, True, True, 3.0)


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Progress:
    """Numbered progress lines with the elapsed time."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def step(self, text: str) -> None:
        """Print one finished step."""
        self.done += 1
        print(f"[{self.done:>3}/{self.total}] {time.monotonic() - self.t0:6.1f}s  {text}", flush=True)

    def note(self, text: str) -> None:
        """Print a line that is not a step."""
        print(f"          {time.monotonic() - self.t0:6.1f}s  {text}", flush=True)


def measure_ceiling(redis_url: str, seconds: float) -> list[dict]:
    """Flask's in-process requests per core, in a child process with the bench's Redis."""
    cmd = [sys.executable, "-m", "loadtest.ceiling", "--seconds", str(seconds)]
    for endpoint in ENDPOINTS:
        cmd += ["--path", endpoint]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60 + 4 * seconds,
                          env={**os.environ, "REDIS_URL": redis_url})
    if proc.returncode:
        raise RuntimeError(f"ceiling failed: {proc.stderr[-500:]}")
    return [{"kind": "ceiling", "server": "in-process", "policy": "-", "workers": 1, **json.loads(line)}
            for line in proc.stdout.splitlines() if line.startswith("{")]


def measure_throughput(srv: Server, endpoint: str, plan: Plan, close: bool) -> dict:
    """One wrk run, with the master's CPU and RSS sampled around it."""
    url = srv.url + endpoint
    if plan.warmup_s:
        wrk.run(url, plan.warmup_s, plan.connections, close=close)
    before = sample(srv.proc.pid)
    res = wrk.run(url, plan.duration_s, plan.connections, close=close)
    after = sample(srv.proc.pid)
    errors = sum(res["errors"].values()) + res["non2xx"]
    return {
        "kind": "throughput", "server": srv.server, "policy": srv.policy, "workers": srv.workers,
        "endpoint": endpoint, "conn": "close" if close else "keepalive", "tool": "wrk",
        "duration_s": plan.duration_s, "connections": plan.connections,
        "rps": res["rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "requests": res["requests"],
        "errors_total": errors, "errors": res["errors"], "non2xx": res["non2xx"],
        "master_cpu_pct": None if cpu_percent(before, after) is None else round(cpu_percent(before, after), 1),
        "master_rss_mb": None if after is None else round(after.rss / 2**20, 1),
    }


def measure_loss(srv: Server, seconds: float) -> dict:
    """New-connection load on `/` while one worker is SIGKILLed a third of the way in."""
    gen = LoadGen(HOST, srv.port, ["/"], concurrency=8, keepalive=False, duration=seconds,
                  max_requests=200_000, timeout=2.0).start()
    time.sleep(seconds / 3)
    victims = srv.worker_pids()
    if victims:
        os.kill(random.choice(victims), signal.SIGKILL)
    records = gen.join()
    by_kind = kinds(records)
    # Wait for the replacement before the next measurement; a server that never replaces it shows here.
    try:
        srv.wait_workers(srv.workers, 10)
        replaced = True
    except TimeoutError:
        replaced = False
    return {"kind": "loss", "server": srv.server, "policy": srv.policy, "workers": srv.workers,
            "requests": len(records), "failures": len(records) - by_kind.get("ok", 0), "by_kind": by_kind,
            "replaced": replaced}


def servers_to_run(only: list[str] | None) -> tuple[list[tuple[str, str]], list[str]]:
    """(server, policy) pairs to measure and notes on what had to be skipped."""
    pairs, notes = [], []
    if master_available():
        pairs += [("pycluster", p) for p in POLICIES]
    else:
        notes.append("`python -m master` is not in this checkout yet: pycluster was not measured.")
    pairs += [("gunicorn", k) for k in GUNICORN_CLASSES]
    if only:
        pairs = [p for p in pairs if f"{p[0]}/{p[1]}" in only or p[0] in only]
    return pairs, notes


def count_steps(pairs, plan: Plan, cpus: int) -> int:
    """How many progress steps the plan has (for the [i/total] counter)."""
    steps = 1
    for server, policy in pairs:
        for n in plan.workers:
            steps += len(ENDPOINTS) + (1 if plan.close_every_n or n == max(plan.workers) else 0)
            if n == max(plan.workers):
                fair = server == "pycluster" or policy == "sync"
                steps += (len(fairness.MODES) + 1) if fair else 0
                steps += 1 if plan.mixed_everywhere or policy in ("rr", "gevent") else 0
    return steps


def run(plan: Plan, cpus: int, pairs, notes) -> list[dict]:
    """Every measurement of the plan; the list of runs."""
    runs: list[dict] = []
    progress = Progress(count_steps(pairs, plan, cpus))
    redis = RedisServer().start()
    try:
        for r in measure_ceiling(redis.url, plan.ceiling_s):
            runs.append(r)
        progress.step("ceiling " + ", ".join(f"{r['endpoint']} {r['rps_per_core']:,.0f}/core" for r in runs))
        top = max(plan.workers)
        for server, policy in pairs:
            for n in plan.workers:
                try:
                    srv = Server(server, policy, n, redis.url).start()
                except (RuntimeError, TimeoutError) as exc:
                    # One server that cannot start must not cost the whole run: say so and go on.
                    last = str(exc).strip().splitlines()
                    notes.append(f"{server} {policy} with {n} workers failed to start; nothing measured for it "
                                 f"({last[0]}; last log line: {last[-1] if len(last) > 1 else '-'}).")
                    progress.note(f"{server}/{policy} N={n} FAILED TO START, skipped")
                    continue
                try:
                    endpoints = [(e, False) for e in ENDPOINTS]
                    if plan.close_every_n or n == top:
                        endpoints.append(("/", True))
                    for endpoint, close in endpoints:
                        r = measure_throughput(srv, endpoint, plan, close)
                        runs.append(r)
                        progress.step(f"{srv.label:<18} N={n} {endpoint:<6}{' close' if close else '':6} "
                                      f"{r['rps'] or 0:>9,.0f} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
                                      f"  master {r['master_cpu_pct']}% CPU"
                                      + (f"  ERRORS {r['errors_total']}" if r["errors_total"] else ""))
                    if n != top:
                        continue
                    if server == "pycluster" or policy == "sync":
                        for mode in fairness.MODES:
                            f = fairness.measure(srv.port, srv.worker_pids(), mode, plan.fairness_requests,
                                                 max_seconds=30 if not plan.quick else 8)
                            runs.append({"kind": "fairness", "server": server, "policy": policy, "workers": n, **f})
                            progress.step(f"{srv.label:<18} N={n} fairness {mode:<10} {f['per_worker']} "
                                          f"Jain {f['jain']}")
                        loss = measure_loss(srv, plan.loss_s)
                        runs.append(loss)
                        progress.step(f"{srv.label:<18} N={n} loss on SIGKILL: {loss['failures']} of "
                                      f"{loss['requests']} failed {loss['by_kind']}")
                    if plan.mixed_everywhere or policy in ("rr", "gevent"):
                        m = mixed.run(srv.url, plan.mixed_users, plan.mixed_s)
                        runs.append({"kind": "mixed", "server": server, "policy": policy, "workers": n,
                                     "endpoint": "mixed", "users": plan.mixed_users, "tool": "locust", **m})
                        progress.step(f"{srv.label:<18} N={n} mixed (locust) {m['rps'] or 0:,.0f} req/s "
                                      f"p99 {m['p99_ms']} ms, {m['failures']} failures")
                finally:
                    srv.stop()
                    srv.cleanup()
    finally:
        redis.stop()
    return runs


def main(argv=None) -> int:
    """Parse the flags, run the plan, write the report."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under two minutes), indicative only")
    parser.add_argument("--workers", help="comma-separated worker counts (default 1..CPUs)")
    parser.add_argument("--only", help="comma-separated servers to run, e.g. pycluster/rr,gunicorn")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="where BENCHMARKS.md and bench/ go")
    args = parser.parse_args(argv)
    if not app_available():
        print("app/wsgi.py is missing: nothing to benchmark", file=sys.stderr)
        return 2
    if not wrk.available():
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    cpus = cpu_count()
    plan = make_plan(args.quick, cpus, [int(w) for w in args.workers.split(",")] if args.workers else None)
    pairs, notes = servers_to_run(args.only.split(",") if args.only else None)
    for note in notes:
        print(f"note: {note}", flush=True)
    started = time.monotonic()
    runs = add_derived(run(plan, cpus, pairs, notes))
    meta = {
        "command": "python -m loadtest.bench" + (" --quick" if plan.quick else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": cpus, "python": platform.python_version(), "quick": plan.quick,
        "tool": "wrk (1 thread) and Locust for the mixed profile", "duration_s": plan.duration_s,
        "connections": plan.connections, "workers": list(plan.workers), "notes": notes,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    paths = report.write(runs, meta, Path(args.docs))
    print(f"wrote {paths['results']}, {paths['markdown']} and {len(paths['plots'])} plots "
          f"in {meta['elapsed_s']:.0f}s", flush=True)
    for row in report.targets(runs, cpus):
        print(f"target {row['policy']:<10} {row['target']}: {row['measured']} -> {'met' if row['met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
