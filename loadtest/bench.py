"""`python -m loadtest.bench [--quick]`: our master (each policy) against gunicorn (each class) and granian.

Throughput and latency with wrk on `/`, `/work`, `/count` for workers = 1..CPUs, the mixed profile with
Locust, fairness per policy, loss when a worker is SIGKILLed, master CPU/RSS, the workers' CPU per
request, and Flask's in-process ceiling; then the mixed keep-alive profile with wrk, every server in
turn over rounds (loadtest/mixed_rounds.py); then the guard: keep-alive `/` of the code that wrote the
committed results, run beside the current code in turn (loadtest/guard.py). Writes
docs/bench/results.json, docs/bench/*.png and docs/BENCHMARKS.md. Loopback only. pycluster's workers
serve with the engine ENGINE names (httptools by default): `ENGINE=pywsgi make bench` measures pywsgi.

For a scaling run on a bigger machine, narrow it down and write elsewhere, e.g.
`taskset -c 0-11 python -m loadtest.bench --workers 1,2,4,8,12 --servers pycluster-rr,gunicorn-sync
--endpoints /,/work --skip fairness,loss,mixed,guard --wrk-threads 4 --load-cpus 12-15 --out docs/bench/device`.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest import capacity, fairness, guard, mixed, mixed_rounds, report, wrk
from loadtest.loadgen import LoadGen, kinds
from loadtest.progress import Progress
from loadtest.servers import (GUNICORN_CLASSES, HOST, POLICIES, REPO, RedisServer, Server, app_available,
                              cpu_percent, cpu_seconds, master_available, sample)
from loadtest.stats import add_derived

ENDPOINTS = ("/", "/work", "/count")
GUARD_PAIRS, GUARD_PAIRS_QUICK = 3, 1  # alternating runs of the previous committed code and ours, per policy
EXTRAS = ("ceiling", "fairness", "loss", "mixed", "mixed-keepalive", "capacity", "guard")   # what --skip may leave out


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
    endpoints: tuple[tuple[str, bool], ...] | None = None   # (endpoint, close) at every N; None: the default set
    skip: frozenset[str] = frozenset()                      # of EXTRAS
    wrk_threads: int = 1
    wrk_cpus: str | None = None                              # taskset CPU list for the load (wrk, Locust), e.g. "12-15"
    capacity_s: float = 12.0                                 # per capacity timeline (crash, start-up, scale-up)
    mixed_keepalive_s: float = 8.0                           # the mixed keep-alive profile (wrk), per round
    mixed_keepalive_rounds: int = 3                          # every server in turn, fresh (loadtest/mixed_rounds.py)


def make_plan(quick: bool, cpus: int, workers: list[int] | None) -> Plan:
    """The full plan, or the quick one that fits in two minutes."""
    if quick:
        return Plan(True, tuple(workers or sorted({1, cpus})), 1, 0, 32, 500, 2.0, 4, 20, False, False, 0.5,
                    capacity_s=9.0, mixed_keepalive_s=3.0, mixed_keepalive_rounds=1)
    return Plan(False, tuple(workers or range(1, cpus + 1)), 10, 2, 32, 2000, 6.0, 15, 50, True, True, 3.0)


def parse_endpoints(text: str) -> tuple[tuple[str, bool], ...]:
    """'/,/work,/:close' -> (('/', False), ('/work', False), ('/', True)); ':close' is a new connection per
    request."""
    pairs = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        endpoint, _, mode = item.partition(":")
        if endpoint not in ENDPOINTS or mode not in ("", "close"):
            raise ValueError(f"unknown endpoint {item!r}: use {', '.join(ENDPOINTS)}, optionally with :close")
        pairs.append((endpoint, mode == "close"))
    if not pairs:
        raise ValueError("no endpoints given")
    return tuple(dict.fromkeys(pairs))


def customize(plan: Plan, duration_s: float | None = None, warmup_s: float | None = None,
              connections: int | None = None, endpoints: str | None = None, skip: str | None = None,
              wrk_threads: int | None = None, wrk_cpus: str | None = None) -> Plan:
    """The plan with the command line's overrides; None leaves a field as the plan has it."""
    changes = {}
    if duration_s is not None:
        if duration_s < 1:
            raise ValueError("--duration must be at least 1 s (wrk runs whole seconds)")
        changes["duration_s"] = duration_s
    if warmup_s is not None:
        changes["warmup_s"] = max(0.0, warmup_s)
    if connections is not None:
        changes["connections"] = max(1, connections)
    if endpoints is not None:
        changes["endpoints"] = parse_endpoints(endpoints)
    if skip is not None:
        names = frozenset(filter(None, (i.strip() for i in skip.split(","))))
        if names - set(EXTRAS):
            raise ValueError(f"--skip takes {', '.join(EXTRAS)}, not {', '.join(sorted(names - set(EXTRAS)))}")
        changes["skip"] = names
    if wrk_threads is not None:
        changes["wrk_threads"] = max(1, wrk_threads)
    if wrk_cpus is not None:
        changes["wrk_cpus"] = wrk_cpus or None
    return dataclasses.replace(plan, **changes)


def throughput_runs(plan: Plan, n: int) -> list[tuple[str, bool]]:
    """(endpoint, close) pairs measured at N workers."""
    if plan.endpoints is not None:
        return list(plan.endpoints)
    runs = [(e, False) for e in ENDPOINTS]
    if plan.close_every_n or n == max(plan.workers):
        runs.append(("/", True))
    return runs


def cpu_list_problem(cpus: str) -> str | None:
    """Why taskset cannot run a program on the CPU list `cpus` here (None: it can), asked before the
    first measurement rather than found by every load run failing."""
    proc = subprocess.run(["taskset", "-c", cpus, "true"], capture_output=True, text=True, timeout=10)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["taskset refused it"])[-1]


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
        wrk.run(url, plan.warmup_s, plan.connections, plan.wrk_threads, close=close, cpus=plan.wrk_cpus)
    before = sample(srv.proc.pid)
    res, cpu_used, elapsed = with_worker_cpu(srv, lambda: wrk.run(
        url, plan.duration_s, plan.connections, plan.wrk_threads, close=close, cpus=plan.wrk_cpus),
        wrk.window_s(plan.duration_s))
    after = sample(srv.proc.pid)
    errors = sum(res["errors"].values()) + res["non2xx"]
    # The workers' CPU (user + system) per request: what serving one costs, whatever the load generator
    # and the other servers' processes do meanwhile (a worker replaced mid-run makes it an underestimate).
    worker_us = cpu_figures(cpu_used, elapsed, res["requests"])["worker_cpu_us_per_req"]
    return {
        "kind": "throughput", "server": srv.server, "policy": srv.policy, "workers": srv.workers,
        "endpoint": endpoint, "conn": "close" if close else "keepalive", "tool": "wrk",
        "duration_s": plan.duration_s, "connections": plan.connections, "wrk_threads": plan.wrk_threads,
        "rps": res["rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "requests": res["requests"],
        "errors_total": errors, "errors": res["errors"], "non2xx": res["non2xx"],
        "master_cpu_pct": None if cpu_percent(before, after) is None else round(cpu_percent(before, after), 1),
        "master_rss_mb": None if after is None else round(after.rss / 2**20, 1),
        "worker_cpu_us_per_req": worker_us,
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


def measure_mixed_keepalive(srv: Server, plan: Plan) -> dict:
    """32 keep-alive connections, 1 request in 8 is 10 ms of CPU: throughput, p99 and the slowest, and
    the workers' CPU per request and how many CPUs they kept busy. The profile is CPU-bound: where
    two servers both keep the CPUs busy, their rates differ only by what a request costs each.
    A fresh server is warmed with the same profile first, as the throughput cells are."""
    if plan.warmup_s:
        wrk.run(srv.url, plan.warmup_s, 32, plan.wrk_threads, cpus=plan.wrk_cpus, script=wrk.MIXED_KEEPALIVE_SCRIPT)
    res, cpu_used, elapsed = with_worker_cpu(srv, lambda: wrk.run(
        srv.url, plan.mixed_keepalive_s, 32, plan.wrk_threads, cpus=plan.wrk_cpus, script=wrk.MIXED_KEEPALIVE_SCRIPT),
        wrk.window_s(plan.mixed_keepalive_s))
    return {"kind": "mixed-keepalive", "server": srv.server, "policy": srv.policy, "workers": srv.workers,
            "endpoint": "mixed-keepalive", "connections": 32, "duration_s": plan.mixed_keepalive_s,
            "rps": res["rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "max_ms": res.get("max_ms"),
            "over_1s": res.get("over_1s"), "timeouts": res["errors"]["timeout"], "requests": res["requests"],
            "errors_total": sum(res["errors"].values()) + res["non2xx"], **cpu_figures(cpu_used, elapsed, res["requests"])}


def with_worker_cpu(srv: Server, measure, window_s: float | None = None):
    """Run measure(): its result, the CPU seconds the server's workers used meanwhile, and the wall seconds."""
    return worker_cpu_over(srv.worker_pids(), measure, window_s)


def worker_cpu_over(workers: list[int], measure, window_s: float | None = None):
    """Run measure(): its result, the CPU seconds `workers` used, and the wall seconds, counted up to
    `window_s` after the start when given, or up to measure()'s end if that comes first.

    wrk counts the requests of its `-d` window, but its process can outlive that window: against a
    server that leaves connections unanswered (gunicorn gevent in the mixed profile) it exits about a
    second later, with the workers idle by then. Counting that second made gevent's workers look
    1.64 CPUs busy and 1,481 µs per request where they were 1.97 and about 1,460 (measured per 0.25 s).
    """
    mark: dict[str, float] = {}

    def at_window() -> None:
        mark["cpu"], mark["t"] = cpu_seconds(workers), time.monotonic()

    before, started = cpu_seconds(workers), time.monotonic()
    timer = threading.Timer(window_s, at_window) if window_s else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        result = measure()
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
    if "cpu" in mark:
        return result, mark["cpu"] - before, mark["t"] - started
    return result, cpu_seconds(workers) - before, time.monotonic() - started


def cpu_figures(cpu_used: float, elapsed: float, requests: int | None) -> dict:
    """The workers' CPU per request (µs) and how many CPUs they kept busy, for a profile's record."""
    return {"worker_cpu_us_per_req": round(1e6 * cpu_used / requests, 1) if requests else None,
            "worker_cpus_busy": round(cpu_used / elapsed, 2) if elapsed > 0 else None}


def mixed_keepalive_line(srv: Server, r: dict) -> str:
    return (f"{srv.label:<18} N={srv.workers} mixed keep-alive {r['rps'] or 0:,.0f} req/s  p99 {r['p99_ms']} ms  "
            f"max {r['max_ms']} ms  over 1 s {r['over_1s']}  timeouts {r['timeouts']}  "
            f"workers {r['worker_cpu_us_per_req']} us/req on {r['worker_cpus_busy']} CPUs")


def capacity_line(srv: Server, r: dict) -> str:
    back = "never" if r["recovered_s"] is None else f"{r['recovered_s']} s"
    return (f"{srv.label:<18} N={srv.workers} capacity {r['scenario']:<8} back to 0.9 in {back}, top share "
            f"{r['top_share_after']:.2f}, {r['failures']} failures")


def measure_capacity_changes(server: str, policy: str, n: int, redis_url: str, plan: Plan, progress) -> list[dict]:
    """Start-up under load (N workers), then N-1 scaled up to N (SIGTTIN, which both masters take)."""
    out = []
    srv, res = capacity.startup(lambda port: Server(server, policy, n, redis_url, port=port).start(), plan.capacity_s)
    try:
        out.append(res)
        progress.step(capacity_line(srv, res))
    finally:
        srv.stop()
        srv.cleanup()
    if server == "granian":  # no signal adds a granian worker: there is no scale-up to measure
        return out
    srv = Server(server, policy, n - 1, redis_url).start()
    try:
        res = capacity.scale_up(srv, lambda s: s.signal(signal.SIGTTIN), plan.capacity_s)
        res["workers"] = n
        out.append(res)
        progress.step(capacity_line(srv, res))
    finally:
        srv.stop()
        srv.cleanup()
    return out


def servers_to_run(only: list[str] | None) -> tuple[list[tuple[str, str]], list[str]]:
    """(server, policy) pairs to measure and notes on what had to be skipped."""
    pairs, notes = [], []
    if master_available():
        pairs += [("pycluster", p) for p in POLICIES]
    else:
        notes.append("`python -m master` is not in this checkout yet: pycluster was not measured.")
    pairs += [("gunicorn", k) for k in GUNICORN_CLASSES]
    pairs.append(("granian", "wsgi"))
    if only:
        # "pycluster-rr" and "pycluster/rr" both name one server; "gunicorn" names every class.
        only = [name.strip().replace("-", "/", 1) for name in only]
        pairs = [p for p in pairs if f"{p[0]}/{p[1]}" in only or p[0] in only]
    return pairs, notes


def count_steps(pairs, plan: Plan, cpus: int) -> int:
    """How many progress steps the plan has (for the [i/total] counter)."""
    steps = 0 if "ceiling" in plan.skip else 1
    for server, policy in pairs:
        for n in plan.workers:
            steps += len(throughput_runs(plan, n))
            if n == max(plan.workers):
                fair = server == "pycluster" or policy == "sync"
                steps += len(fairness.MODES) if fair and "fairness" not in plan.skip else 0
                steps += 1 if fair and "loss" not in plan.skip else 0
                steps += 1 if "mixed" not in plan.skip and (plan.mixed_everywhere or policy in ("rr", "gevent")) else 0
                steps += 0 if "capacity" in plan.skip or n < 2 else (2 if server == "granian" else 3)
    if "mixed-keepalive" not in plan.skip:
        steps += len(pairs) * plan.mixed_keepalive_rounds
    if "guard" not in plan.skip:
        ours = sum(server == "pycluster" for server, _ in pairs)
        steps += ours + (1 if ours else 0)  # each policy against the previous code, then rr against itself
    return steps


def run(plan: Plan, cpus: int, pairs, notes) -> list[dict]:
    """Every measurement of the plan; the list of runs."""
    runs: list[dict] = []
    progress = Progress(count_steps(pairs, plan, cpus))
    redis = RedisServer().start()
    try:
        if "ceiling" not in plan.skip:
            progress.start("ceiling: Flask in-process")
            for r in measure_ceiling(redis.url, plan.ceiling_s):
                runs.append(r)
            progress.step("ceiling " + ", ".join(f"{r['endpoint']} {r['rps_per_core']:,.0f}/core" for r in runs))
        top = max(plan.workers)
        for server, policy in pairs:
            for n in plan.workers:
                progress.start(f"{server}/{policy} N={n}: starting")
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
                    for endpoint, close in throughput_runs(plan, n):
                        progress.start(f"{srv.label} N={n} {endpoint}{' close' if close else ''}")
                        r = measure_throughput(srv, endpoint, plan, close)
                        runs.append(r)
                        progress.step(f"{srv.label:<18} N={n} {endpoint:<6}{' close' if close else '':6} "
                                      f"{r['rps'] or 0:>9,.0f} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
                                      f"  master {r['master_cpu_pct']}% CPU  workers {r['worker_cpu_us_per_req']} us/req"
                                      + (f"  ERRORS {r['errors_total']}" if r["errors_total"] else ""))
                    if n != top:
                        continue
                    if server == "pycluster" or policy == "sync":
                        for mode in () if "fairness" in plan.skip else fairness.MODES:
                            progress.start(f"{srv.label} N={n} fairness {mode}")
                            f = fairness.measure(srv.port, srv.worker_pids(), mode,
                                                 fairness.requests_for(mode, plan.fairness_requests, plan.quick),
                                                 max_seconds=30 if not plan.quick else 8)
                            runs.append({"kind": "fairness", "server": server, "policy": policy, "workers": n, **f})
                            progress.step(f"{srv.label:<18} N={n} fairness {mode:<10} {f['per_worker']} "
                                          f"Jain {f['jain']}")
                        if "loss" not in plan.skip:
                            progress.start(f"{srv.label} N={n} loss on SIGKILL")
                            loss = measure_loss(srv, plan.loss_s)
                            runs.append(loss)
                            progress.step(f"{srv.label:<18} N={n} loss on SIGKILL: {loss['failures']} of "
                                          f"{loss['requests']} failed {loss['by_kind']}")
                    if "mixed" not in plan.skip and (plan.mixed_everywhere or policy in ("rr", "gevent")):
                        progress.start(f"{srv.label} N={n} mixed (locust)")
                        m, cpu_used, elapsed = with_worker_cpu(
                            srv, lambda: mixed.run(srv.url, plan.mixed_users, plan.mixed_s, cpus=plan.wrk_cpus))
                        runs.append({"kind": "mixed", "server": server, "policy": policy, "workers": n,
                                     "endpoint": "mixed", "users": plan.mixed_users, "tool": "locust", **m,
                                     **cpu_figures(cpu_used, elapsed, m.get("requests"))})
                        progress.step(f"{srv.label:<18} N={n} mixed (locust) {m['rps'] or 0:,.0f} req/s "
                                      f"p99 {m['p99_ms']} ms, {m['failures']} failures, workers "
                                      f"{runs[-1]['worker_cpu_us_per_req']} us/req on {runs[-1]['worker_cpus_busy']} CPUs")
                    if "capacity" not in plan.skip and n >= 2:
                        runs.append(capacity.crash(srv, plan.capacity_s))
                        progress.step(capacity_line(srv, runs[-1]))
                except Exception as exc:  # noqa: BLE001 - one server's failure must not lose the whole run
                    notes.append(f"{server} {policy} with {n} workers stopped mid-run: {type(exc).__name__}: {exc}")
                    progress.note(f"{server}/{policy} N={n} FAILED MID-RUN ({exc}); its remaining cells skipped")
                finally:
                    srv.stop()
                    srv.cleanup()
                if n == top and n >= 2 and "capacity" not in plan.skip:
                    runs += measure_capacity_changes(server, policy, n, redis.url, plan, progress)
        if "mixed-keepalive" not in plan.skip:
            records, round_notes = mixed_rounds.measure(pairs, top, redis.url, plan.mixed_keepalive_rounds,
                                                        lambda srv: measure_mixed_keepalive(srv, plan), progress,
                                                        mixed_keepalive_line)
            runs += records
            notes += round_notes
        policies = [policy for server, policy in pairs if server == "pycluster"]
        if "guard" not in plan.skip and policies:
            pairs_each = GUARD_PAIRS_QUICK if plan.quick else GUARD_PAIRS
            records, guard_notes = guard.measure(policies, top, redis.url, pairs_each,
                                                 lambda srv: measure_throughput(srv, "/", plan, False), progress)
            runs += records
            notes += guard_notes
    finally:
        progress.close()
        redis.stop()
    return runs


def main(argv=None) -> int:
    """Parse the flags, run the plan, write the report."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under two minutes), indicative only")
    parser.add_argument("--workers", help="comma-separated worker counts, e.g. 1,2,4,8,16 (default 1..CPUs)")
    parser.add_argument("--servers", "--only", dest="only", metavar="LIST",
                        help="comma-separated servers to run, e.g. pycluster-rr,gunicorn-gevent (or pycluster/rr; "
                             "'gunicorn' or 'pycluster' alone for every class or policy); default all")
    parser.add_argument("--endpoints", help=f"comma-separated endpoints measured at every N, of "
                                            f"{', '.join(ENDPOINTS)}; add ':close' for a new connection per "
                                            "request, e.g. /,/work,/:close (default all three, and / with close "
                                            "at N = CPUs or every N)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10, or 1 with --quick)")
    parser.add_argument("--warmup", type=float,
                        help="seconds of wrk warm-up before each run (default 2, 0 with --quick)")
    parser.add_argument("--connections", type=int, help="wrk connections (default 32)")
    parser.add_argument("--wrk-threads", type=int, help="wrk threads (default 1)")
    parser.add_argument("--load-cpus", "--wrk-cpus", dest="wrk_cpus",
                        help="run the load generators (wrk and Locust) under `taskset -c LIST`, e.g. 12-15, to keep "
                             "them off the server's CPUs (start the bench itself under taskset for the server's)")
    parser.add_argument("--skip", help=f"comma-separated extras to leave out: {', '.join(EXTRAS)} "
                                       "(e.g. fairness,loss,mixed for throughput scaling only)")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="where BENCHMARKS.md and bench/ go")
    parser.add_argument("--out", help="write results.json, meta.json, the plots and BENCHMARKS.md all into this "
                                      "directory instead of --docs (e.g. docs/bench/device)")
    args = parser.parse_args(argv)
    cpus = cpu_count()
    try:
        workers = sorted({int(w) for w in args.workers.split(",") if w.strip()}) if args.workers else None
        if workers is not None and (not workers or workers[0] < 1):
            raise ValueError("--workers takes positive counts, e.g. 1,2,4,8")
        plan = customize(make_plan(args.quick, cpus, workers), args.duration, args.warmup, args.connections,
                         args.endpoints, args.skip, args.wrk_threads, args.wrk_cpus)
    except ValueError as exc:
        parser.error(str(exc))
    if not app_available():
        print("app/wsgi.py is missing: nothing to benchmark", file=sys.stderr)
        return 2
    if not wrk.available():
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if plan.wrk_cpus and not shutil.which("taskset"):
        print("--load-cpus needs taskset (util-linux)", file=sys.stderr)
        return 2
    if plan.wrk_cpus and (problem := cpu_list_problem(plan.wrk_cpus)):
        print(f"--load-cpus {plan.wrk_cpus!r}: {problem}", file=sys.stderr)
        return 2
    pairs, notes = servers_to_run(args.only.split(",") if args.only else None)
    if args.only and not pairs:
        known = ", ".join(f"{server}-{policy}" for server, policy in servers_to_run(None)[0])
        print(f"--servers {args.only!r} names no server here: use {known}, or a family (pycluster, gunicorn)",
              file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", flush=True)
    started = time.monotonic()
    runs = add_derived(run(plan, cpus, pairs, notes))
    meta = {
        "command": ("python -m loadtest.bench " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": cpus, "python": platform.python_version(), "quick": plan.quick,
        "tool": (f"wrk ({plan.wrk_threads} thread{'s' if plan.wrk_threads > 1 else ''}"
                 + (f", on CPUs {plan.wrk_cpus}" if plan.wrk_cpus else "") + ")"
                 + ("" if "mixed" in plan.skip else " and Locust for the mixed profile"
                    + (f" (on CPUs {plan.wrk_cpus})" if plan.wrk_cpus else ""))),
        "duration_s": plan.duration_s, "warmup_s": plan.warmup_s, "wrk_cpus": plan.wrk_cpus,
        "connections": plan.connections, "workers": list(plan.workers), "notes": notes,
        "elapsed_s": round(time.monotonic() - started, 1), "engine": os.environ.get("ENGINE") or "httptools",
    }
    paths = report.write(runs, meta, Path(args.docs), out=Path(args.out) if args.out else None)
    print(f"wrote {paths['results']}, {paths['markdown']} and {len(paths['plots'])} plots "
          f"in {meta['elapsed_s']:.0f}s", flush=True)
    for row in report.targets(runs, cpus, paths["previous"]):
        print(f"target {row['policy']:<10} {row['target']}: {row['measured']} -> {'met' if row['met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
