"""`python -m loadtest.chaos [--scenario NAME] [--compose]`: faults injected under load, judged by numbers.

Scenarios: worker-kill, worker-hang, redis-outage, rolling-restart, graceful-shutdown, and the whole stack's
replica-kill, redis-primary-kill, swarm-node-kill, swarm-primary-node-kill (loadtest/chaos_stack.py). Each prints one
verdict line and writes docs/chaos/<scenario>.json and docs/chaos/<scenario>.png. Load is GET / and
GET /count on new connections (so the policy decides every request); lost increments compare the
successful /count answers with the change of the counter in Redis and must be 0.
"""

import argparse
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest import capacity, chaos_stack
from loadtest.loadgen import LoadGen, kinds
from loadtest.progress import Progress
from loadtest.servers import HOST, REPO, RedisServer, Server, master_available, wait_http
from loadtest.timeline import baseline, buckets, plot, recovery_time

COUNTER_KEY = "page_views"
WIDTH = 0.5  # seconds per timeline bucket


@dataclass(frozen=True)
class Timing:
    """Scenario lengths: the issue's, or shorter ones for a quick look."""

    warm: float = 5.0            # steady load before the first fault: the baseline
    kill_every: float = 2.0
    kill_for: float = 30.0
    hang_for: float = 15.0
    outage: float = 10.0
    tail: float = 8.0            # load after the last fault, to see the recovery
    restart_deadline: float = 60.0


# The watchdog's timeout in every scenario, for both servers: short enough that worker-hang
# shows the hung worker replaced within the scenario (both default to 30 s).
WORKER_TIMEOUT = 5.0
QUICK = Timing(warm=3.0, kill_for=8.0, hang_for=8.0, outage=4.0, tail=5.0, restart_deadline=30.0)


class LocalTarget:
    """Our master (or gunicorn, for comparison) on a loopback port with its own Redis."""

    name = "local"

    def __init__(self, server: str, policy: str, workers: int, graceful_timeout: float = 10.0,
                 worker_timeout: float = WORKER_TIMEOUT):
        self.redis = RedisServer()
        self.server = Server(server, policy, workers, "", graceful_timeout=graceful_timeout,
                             worker_timeout=worker_timeout)
        self.workers = workers
        # gunicorn's USR2 re-executes the binary; its rolling reload is HUP.
        self.reload_signal = signal.SIGUSR2 if server == "pycluster" else signal.SIGHUP

    @property
    def port(self) -> int:
        """The port the load goes to."""
        return self.server.port

    def start(self) -> None:
        """Redis, then the server, both ready."""
        self.redis.start()
        self.server.redis_url = self.redis.url
        self.server.start()

    def stop(self) -> None:
        """Server, then Redis."""
        try:
            self.server.stop()
            self.server.cleanup()
        finally:
            self.redis.stop()

    def worker_pids(self) -> list[int]:
        """The live workers."""
        return self.server.worker_pids()

    def signal_worker(self, pid: int, sig: int) -> None:
        """Send sig to one worker."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def signal_master(self, sig: int) -> None:
        """Send sig to the master."""
        self.server.signal(sig)

    def redis_kill(self) -> None:
        """Crash Redis (SIGKILL)."""
        self.redis.kill()

    def redis_start(self) -> None:
        """Restart Redis on the same port and data directory."""
        self.redis.start()

    def counter(self) -> int:
        """The page-view counter in Redis."""
        return self.redis.get_int(COUNTER_KEY)

    def wait_master_exit(self, timeout: float) -> int | None:
        """Wait for the master to exit by itself; its exit code, None if it did not."""
        try:
            return self.server.proc.wait(timeout=timeout)
        except Exception:  # subprocess.TimeoutExpired: it did not exit in time
            return None

    def ready(self, deadline: float = 30.0) -> None:
        """Wait until the app answers /health."""
        wait_http(self.port, "/health", deadline)


def load(target, seconds: float, concurrency: int = 8, paths=("/", "/count")) -> LoadGen:
    """Start bounded background load on the target."""
    return LoadGen(getattr(target, "host", HOST), target.port, list(paths), concurrency=concurrency,
                   keepalive=False, duration=seconds, max_requests=2_000_000, timeout=2.0).start()


def sleep_until(t0: float, at: float) -> None:
    """Sleep until `at` seconds after t0."""
    time.sleep(max(0.0, t0 + at - time.monotonic()))


def wait_for(predicate, deadline: float, step: float = 0.1) -> float | None:
    """Poll predicate until true; seconds it took, None on deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if predicate():
            return round(time.monotonic() - start, 2)
        time.sleep(step)
    return None


def worker_kill(target, timing: Timing) -> dict:
    """SIGKILL a random worker every kill_every seconds for kill_for seconds.

    Beside the new-connection load, keep-alive clients show capacity per worker: after each kill,
    the replacement must take its share of them again (the balancing goal), not idle.
    """
    total = timing.warm + timing.kill_for + timing.tail
    gen = load(target, total)
    keepalive = LoadGen(getattr(target, "host", HOST), target.port, [KEEPALIVE_PATH], concurrency=KEEPALIVE_CLIENTS,
                        keepalive=True, duration=total, timeout=2.0).start()
    faults, t = [], timing.warm
    while t < timing.warm + timing.kill_for:
        sleep_until(gen.t0, t)
        pids = target.worker_pids()
        if pids:
            pid = random.choice(pids)
            target.signal_worker(pid, signal.SIGKILL)
            faults.append({"t": round(time.monotonic() - gen.t0, 2), "what": f"SIGKILL {pid}"})
        t += timing.kill_every
    records = gen.join()
    kept = keepalive_capacity(keepalive.join(), gen.t0, timing.warm, faults[-1]["t"] if faults else 0.0)
    back = wait_for(lambda: len(target.worker_pids()) >= target.workers, 15)
    return {"records": records, "t0": gen.t0, "faults": faults, "recover_from": [f["t"] for f in faults],
            "checks": {"workers_back": back is not None, "keepalive_capacity_back": kept["recovered_s"] is not None
                       and kept["recovered_s"] <= capacity.GOAL_WITHIN},
            "extra": {"keepalive": kept},
            "detail": f"{len(faults)} workers killed; " + ("all replaced" if back is not None else "NOT all replaced")
                      + f"; keep-alive capacity back {kept['recovered_s']} s after the last kill"}


KEEPALIVE_CLIENTS = 8
# What they ask for: CPU work in the worker, as in make bench's capacity cells. With `/` the clients'
# own CPU sets the rate on a small machine, and a worker's share follows whichever process the
# kernel runs, not where the connections are (a 2 s window before any kill had up to 83% on one pid).
KEEPALIVE_PATH = capacity.PATH


def keepalive_capacity(records, t0: float, first_fault: float, last_fault: float) -> dict:
    """The keep-alive clients' timeline per worker, and how soon after the last kill it was whole again
    (at ≥ 0.9 of the rate before the first kill, no worker above 60%)."""
    end = max((r.end for r in records), default=t0)
    points = capacity.buckets(records, t0, end)
    reference = capacity.rate_between(points, 1.0, first_fault)
    return {"clients": KEEPALIVE_CLIENTS, "reference_rps": round(reference, 1),
            "recovered_s": capacity.recovery(points, last_fault, reference),
            "failures": sum(b["failures"] for b in points), "timeline": points}


def worker_hang(target, timing: Timing) -> dict:
    """SIGSTOP one worker; see whether it is replaced and throughput comes back."""
    total = timing.warm + timing.hang_for + timing.tail
    gen = load(target, total)
    sleep_until(gen.t0, timing.warm)
    pids = target.worker_pids()
    victim = random.choice(pids) if pids else None
    faults = []
    if victim:
        target.signal_worker(victim, signal.SIGSTOP)
        faults.append({"t": round(time.monotonic() - gen.t0, 2), "what": f"SIGSTOP {victim}"})
    replaced_after = wait_for(lambda: victim not in target.worker_pids(), timing.hang_for + timing.tail)
    records = gen.join()
    if victim and victim in target.worker_pids():
        target.signal_worker(victim, signal.SIGCONT)  # leave nothing frozen behind
    return {"records": records, "t0": gen.t0, "faults": faults,
            "recover_from": [f["t"] for f in faults],
            "checks": {"hung_worker_replaced": replaced_after is not None},
            "extra": {"hung_worker": victim, "replaced_after_s": replaced_after},
            "detail": f"hung worker {victim} " + (f"replaced after {replaced_after} s" if replaced_after is not None
                                                  else "NOT replaced")}


def redis_outage(target, timing: Timing) -> dict:
    """Kill Redis, keep it away `outage` seconds, restart it on the same port and data."""
    total = timing.warm + timing.outage + timing.tail
    gen = load(target, total)
    sleep_until(gen.t0, timing.warm)
    target.redis_kill()
    down_t = round(time.monotonic() - gen.t0, 2)
    sleep_until(gen.t0, timing.warm + timing.outage)
    target.redis_start()
    up_t = round(time.monotonic() - gen.t0, 2)
    records = gen.join()
    hello_failures = sum(1 for r in records if r.path == "/" and r.kind != "ok")
    first_count = next((r.end - gen.t0 for r in records
                        if r.path == "/count" and r.kind == "ok" and r.end - gen.t0 > up_t), None)
    return {"records": records, "t0": gen.t0,
            "faults": [{"t": down_t, "what": "redis SIGKILL"}, {"t": up_t, "what": "redis restarted", "recovery": True}],
            "recover_from": [up_t],
            "checks": {"hello_unaffected": hello_failures == 0,
                       "count_back_within_2s": first_count is not None and first_count - up_t <= 2.0},
            "extra": {"hello_failures": hello_failures,
                      "count_back_after_restart_s": None if first_count is None else round(first_count - up_t, 2)},
            "detail": f"GET / failures during the outage {hello_failures}; /count back "
                      + (f"{first_count - up_t:.2f} s after the restart" if first_count is not None else "NEVER")}


def rolling_restart(target, timing: Timing) -> dict:
    """SIGUSR2 to the master (SIGHUP for gunicorn): every worker replaced, no request failed."""
    gen = load(target, timing.warm + timing.restart_deadline + timing.tail)
    sleep_until(gen.t0, timing.warm)
    old = set(target.worker_pids())
    sig = getattr(target, "reload_signal", signal.SIGUSR2)
    target.signal_master(sig)
    fault_t = round(time.monotonic() - gen.t0, 2)
    took = wait_for(lambda: not old & set(target.worker_pids()) and len(target.worker_pids()) >= target.workers,
                    timing.restart_deadline, 0.2)
    # The load runs on for `tail` after the restart, then stops: no need to wait out the deadline.
    time.sleep(timing.tail)
    gen.stop()
    records = gen.join()
    return {"records": records, "t0": gen.t0, "faults": [{"t": fault_t, "what": sig.name}],
            "recover_from": [fault_t],
            "checks": {"all_workers_replaced": took is not None, "no_failures": all(r.kind == "ok" for r in records)},
            "extra": {"restart_took_s": took},
            "detail": f"all workers replaced in {took} s" if took is not None else "workers NOT all replaced"}


def graceful_shutdown(target, timing: Timing) -> dict:
    """SIGTERM the master while slow requests are in flight: each of them must complete."""
    gen = load(target, timing.warm + timing.tail)
    # Slow requests (300 ms of CPU) make sure some are in flight at the moment of the signal.
    slow = load(target, timing.warm + timing.tail, concurrency=1, paths=("/work?ms=300",))
    sleep_until(gen.t0, timing.warm)
    target.signal_master(signal.SIGTERM)
    term_t = time.monotonic()
    code = target.wait_master_exit(timing.restart_deadline)
    exit_after = round(time.monotonic() - term_t, 2)
    gen.stop()
    slow.stop()
    records = sorted(gen.join() + slow.join(), key=lambda r: r.start)
    # Started before SIGTERM means accepted by a worker (or queued at the master): it must complete.
    in_flight = [r for r in records if r.start < term_t]
    broken = [r for r in in_flight if r.kind != "ok"]
    after = kinds(r for r in records if r.start >= term_t)
    return {"records": records, "t0": gen.t0, "faults": [{"t": round(term_t - gen.t0, 2), "what": "SIGTERM"}],
            "recover_from": [],
            "checks": {"in_flight_completed": not broken, "master_exit_0": code == 0},
            "extra": {"master_exit_code": code, "master_exit_after_s": exit_after,
                      "started_before_sigterm": len(in_flight), "failed_of_those": len(broken),
                      "failed_kinds_of_those": kinds(broken), "after_sigterm": after},
            "detail": f"{len(in_flight) - len(broken)} of {len(in_flight)} requests started before SIGTERM "
                      f"completed; master exit {code} after {exit_after} s; after SIGTERM {after}",
            "restart": True}


def planned_seconds(name: str, timing: Timing) -> float:
    """About how long a scenario runs, start-up included: the progress line's estimate of time left."""
    if name in chaos_stack.PLANNED_S:
        return chaos_stack.PLANNED_S[name]
    load_s = {"worker-kill": timing.kill_for, "worker-hang": timing.hang_for, "redis-outage": timing.outage,
              "rolling-restart": 5.0}.get(name, 10.0)
    return 3.0 + timing.warm + load_s + timing.tail


SCENARIOS = {
    "worker-kill": worker_kill,
    "worker-hang": worker_hang,
    "redis-outage": redis_outage,
    "rolling-restart": rolling_restart,
    "graceful-shutdown": graceful_shutdown,
    **chaos_stack.SCENARIOS,  # the whole stack (compose, swarm): loadtest/chaos_stack.py
}


def judge(name: str, out: dict, before: int, after: int, target_name: str, meta: dict) -> dict:
    """The scenario's summary: requests, failures by kind, recovery, lost increments, verdict."""
    records, t0 = out["records"], out["t0"]
    end = max((r.end for r in records), default=t0)
    series = buckets(records, t0, end, WIDTH)
    first_fault = out["faults"][0]["t"] if out["faults"] else end - t0
    full = baseline(series, 1.0, first_fault)  # skip the first second: connections still warming
    recoveries = [recovery_time(series, t, full, 0.9, WIDTH) for t in out["recover_from"]]
    count_ok = sum(1 for r in records if r.path == "/count" and r.kind == "ok")
    delta = after - before
    lost = max(0, count_ok - delta)
    by_kind = kinds(records)
    checks = {**out["checks"], "no_lost_increments": lost == 0}
    if out["recover_from"]:
        checks["throughput_recovered"] = all(r is not None for r in recoveries)
    passed = all(checks.values())
    return {
        "scenario": name, "target": target_name, **meta, "passed": passed,
        "requests": len(records), "failures": len(records) - by_kind.get("ok", 0),
        "failures_by_kind": {k: v for k, v in by_kind.items() if k != "ok"},
        "baseline_rps": round(full, 1),
        "time_to_full_throughput_s": max((r for r in recoveries if r is not None), default=None),
        "recoveries_s": recoveries,
        "count_successes": count_ok, "counter_before": before, "counter_after": after,
        "counter_delta": delta, "lost_increments": lost,
        # More increments than successes: requests that counted but whose answer was lost (not a loss).
        "unacknowledged_increments": max(0, delta - count_ok),
        "checks": checks, "detail": out.get("detail", ""), "faults": out["faults"], **out.get("extra", {}),
        "timeline": series,
    }


def verdict_line(res: dict) -> str:
    """The one line a scenario prints."""
    failed = ", ".join(f"{k} {v}" for k, v in sorted(res["failures_by_kind"].items())) or "none"
    missed = [k for k, ok in res["checks"].items() if not ok]
    return (f"{'PASS' if res['passed'] else 'FAIL'} {res['scenario']:<17} requests {res['requests']:,}, "
            f"failures {res['failures']} ({failed}), full throughput again after "
            f"{res['time_to_full_throughput_s'] if res['time_to_full_throughput_s'] is not None else '–'} s, "
            f"lost increments {res['lost_increments']}; {res['detail']}"
            + (f"; missed: {', '.join(missed)}" if missed else ""))


def run_scenario(name: str, make_target, timing: Timing, out_dir: Path, meta: dict) -> dict:
    """Start a fresh target, run one scenario, judge it, write its JSON and PNG."""
    target = make_target()
    target.start()
    try:
        before = target.counter()
        out = SCENARIOS[name](target, timing)
        if out.get("restart") and hasattr(target, "restart_app"):
            target.restart_app()
        # The counter is read once Redis is surely back (redis-outage restarts it mid-run).
        after = target.counter()
    finally:
        target.stop()
    res = judge(name, out, before, after, target.name, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    plot(res["timeline"], res["faults"], f"{name} ({target.name}, {meta['server']} {meta['policy']}, "
         f"N={meta['workers']}) — {'PASS' if res['passed'] else 'FAIL'}", out_dir / f"{name}.png",
         per_worker=res.get("keepalive", {}).get("timeline"))
    return res


def main(argv=None) -> int:
    """Run the chosen scenarios; exit 1 when any failed its checks."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append",
                        help="run only this scenario (repeatable); default all")
    parser.add_argument("--compose", action="store_true", help="against the docker compose stack")
    parser.add_argument("--quick", action="store_true", help="shorter scenarios, for a quick look")
    parser.add_argument("--server", default="pycluster", choices=["pycluster", "gunicorn"],
                        help="local server to hurt (gunicorn for comparison)")
    parser.add_argument("--policy", default=None, help="rr/shared/reuseport, or a gunicorn class")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2))
    parser.add_argument("--out", default=str(REPO / "docs" / "chaos"))
    args = parser.parse_args(argv)
    timing = QUICK if args.quick else Timing()
    policy = args.policy or ("rr" if args.server == "pycluster" else "gevent")
    if args.compose:
        from loadtest.compose_target import ComposeTarget  # noqa: PLC0415 - only this path needs docker

        make_target = ComposeTarget
        meta = {"server": "pycluster", "policy": "compose", "workers": None}
    else:
        if args.server == "pycluster" and not master_available():
            print("`python -m master` is not in this checkout yet (try --server gunicorn)", file=sys.stderr)
            return 2
        make_target = lambda: LocalTarget(args.server, policy, args.workers)
        meta = {"server": args.server, "policy": policy, "workers": args.workers}
    meta["quick"] = args.quick
    results = []
    names = args.scenario or list(SCENARIOS)
    with Progress(len(names), [planned_seconds(name, timing) for name in names]) as progress:
        for name in names:
            progress.start(name)
            stack = chaos_stack.TARGETS.get(name)  # a stack scenario brings up a stack of its own
            res = run_scenario(name, stack or make_target, timing, Path(args.out),
                               {**meta, **chaos_stack.META.get(name, {})})
            progress.step(verdict_line(res))
            results.append(res)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
