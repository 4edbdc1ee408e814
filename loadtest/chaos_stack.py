"""Chaos against the whole stack, under paced Locust load: `python -m loadtest.chaos --scenario NAME`.

- replica-kill        `docker kill` of one app replica of the compose stack
- redis-primary-kill  `docker kill` of the Redis primary of the compose stack (Sentinel fails over)
- swarm-node-kill     a whole node of a 3-node Swarm killed (`ensure-swarm kill-node`), one without the
                      Redis primary
- swarm-primary-node-kill   the node with the Redis primary killed: a Redis failover on top

Each brings up a project (or stack) of its own, measures, and tears it down; the e2e tests run
the same functions against their own stacks. The load is paced (constant throughput, well below
one replica's capacity), so "capacity back" means the offered load is served again: a killed
replica's CPUs are gone until it is restarted, which no load balancer can give back.
Goals (issue #19): replica killed: <= 0.5% of the requests started in the 8 s after fail, none of
the idempotent ones, the offered load served again within 5 s; primary killed: /count answers
within 10 s, no acknowledged increment lost, none counted twice; node killed: <= 1% of the
requests through surviving nodes fail in the 20 s after, the app replicas run again on surviving
nodes within 60 s. When the lost node held the Redis primary, /count answers 503 until a new
one is elected (issue #19 asks for that), so there the 1% is checked on the idempotent requests
and /count must be back within 10 s; the overall ratio is reported beside it.
"""

import json
import random
import secrets
import subprocess
import time

from loadtest.locust_run import LocustRun
from loadtest.stack_compose import REDIS_NODES, ComposeProject, free_port, isolated_env
from loadtest.timeline import baseline, buckets, recovery_time

WIDTH = 0.5            # seconds per timeline bucket, as in loadtest/chaos.py
USERS = 10
RATE = 25.0            # requests per second per user: 250 req/s offered
REPLICA_WINDOW = 8.0   # the goals' windows after the fault
REDIS_WINDOW = 15.0
SWARM_WINDOW = 20.0
REPLICA_FAIL_RATIO = 0.005
SWARM_FAIL_RATIO = 0.01
CAPACITY_BACK_S = 5.0
COUNT_BACK_S = 10.0
RESCHEDULED_S = 60.0


def _sleep_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()))


def _wait(predicate, deadline: float, step: float = 0.2) -> float | None:
    """Poll predicate until it holds; the epoch time it held, None at the deadline."""
    start = time.time()
    while time.time() - start < deadline:
        try:
            if predicate():
                return time.time()
        except (AssertionError, OSError, ValueError, subprocess.SubprocessError):
            pass
        time.sleep(step)
    return None


def count_checks(records, before: int, after: int, sent: dict | None = None, skipped: int = 0) -> tuple[dict, dict]:
    """Checks that /count counted each request at most once and lost no acknowledged increment.

    `sent` (requests sent, by path, counted before each went out) bounds the increments exactly:
    a request whose completion was never recorded still counts as sent.
    """
    answered = [r for r in records if r.path == "/count" and r.kind == "ok"]
    failed = [r for r in records if r.path == "/count" and r.kind != "ok"]
    values = [r.views for r in answered if r.views is not None]
    # A lost acknowledged increment makes the new primary hand its value out again.
    reissued = len(values) - len(set(values))
    delta = after - before
    attempts = sent.get("/count", 0) if sent else len(answered) + len(failed)
    extra = {"count_sent": attempts, "count_answered": len(answered), "count_failed": len(failed),
             "count_unfinished": max(0, attempts - len(answered) - len(failed)), "record_lines_skipped": skipped,
             "reissued_values": reissued, "counted_more_than_sent": max(0, delta - attempts)}
    checks = {"no_reissued_values": reissued == 0,
              # Each request may count once, answered or not: more increments than requests sent is a double count.
              "no_double_counts": delta <= attempts,
              "acknowledged_all_counted": delta >= len(answered)}
    return checks, extra


def _recovery(records, t0: float, fault: float) -> float | None:
    """Seconds from the fault (s after t0) until a bucket serves >= 90% of the pre-fault rate, no failure."""
    # The same computation as chaos.judge's time_to_full_throughput_s.
    end = max((r.end for r in records), default=t0)
    series = buckets(records, t0, end, WIDTH)
    full = baseline(series, 1.0, fault)
    return recovery_time(series, fault, full, 0.9, WIDTH)


def replica_kill(target, timing) -> dict:
    """`docker kill` one app replica under load; HAProxy retries and routes around it."""
    replicas = target.running("app")
    if len(replicas) < 2:
        raise AssertionError(f"replica-kill needs >= 2 app replicas, found {replicas}")
    target.wait_servers_up(len(replicas))
    before = target.counter()
    run = LocustRun(target.load_hosts, USERS, RATE, timing.warm + REPLICA_WINDOW + timing.tail).start()
    try:
        t0 = run.wait_started()
        _sleep_until(t0 + timing.warm)
        victim = random.choice(replicas)
        kill_t = time.time()
        target.kill(victim)
        # HAProxy takes it out on the first failed connection or the next health check.
        marked_down = _since(kill_t, _wait(
            lambda: list(target.haproxy_servers().values()).count("UP") == len(replicas) - 1, REPLICA_WINDOW, 0.1))
        records = run.join()
    finally:
        run.stop()
    after = target.counter()
    window = [r for r in records if kill_t <= r.start < kill_t + REPLICA_WINDOW]
    failed = [r for r in window if r.kind != "ok"]
    idempotent_failed = [r for r in failed if r.path != "/count"]
    back = _recovery(records, t0, round(kill_t - t0, 2))
    target.start_services("app")
    back_in_rotation = _wait(lambda: target.wait_servers_up(len(replicas), 5), 60)
    checks, extra = count_checks(records, before, after, run.sent, run.skipped)
    checks.update({
        "failures_in_8s_at_most_0.5%": len(failed) <= REPLICA_FAIL_RATIO * max(1, len(window)),
        "idempotent_failures_in_8s_none": not idempotent_failed,
        "capacity_back_within_5s": back is not None and back <= CAPACITY_BACK_S,
        "haproxy_took_it_out": marked_down is not None,
        "restarted_replica_back_in_rotation": back_in_rotation is not None,
    })
    return {
        "records": records, "t0": t0, "faults": [{"t": round(kill_t - t0, 2), "what": f"docker kill {victim}"}],
        "recover_from": [round(kill_t - t0, 2)], "checks": checks,
        "extra": {**extra, "victim": victim, "window_requests": len(window), "window_failures": len(failed),
                  "window_failure_ratio": round(len(failed) / max(1, len(window)), 5),
                  "window_idempotent_failures": len(idempotent_failed),
                  "window_failures_by_path": _by_path(failed), "capacity_back_s": back,
                  "haproxy_marked_down_after_s": marked_down, "offered_rps": USERS * RATE},
        "detail": f"killed {victim}: {len(failed)} of {len(window)} requests failed in the 8 s after "
                  f"({len(idempotent_failed)} idempotent); HAProxy took it out after {marked_down} s; "
                  f"offered load served again after {back} s",
    }


def redis_primary_kill(target, timing) -> dict:
    """`docker kill` the Redis primary under load; the Sentinels promote the replica."""
    primary = target.wait_replicated()
    before = target.counter()
    run = LocustRun(target.load_hosts, USERS, RATE, timing.warm + REDIS_WINDOW + timing.tail).start()
    try:
        t0 = run.wait_started()
        _sleep_until(t0 + timing.warm)
        victim = target.container_of(primary)
        kill_t = time.time()
        target.kill(victim)
        # Promoted: the Sentinels name the other node (a lost node's address maps to no running service).
        other = next(n for n in REDIS_NODES if n != primary)
        promoted = _since(kill_t, _wait(lambda: target.primary_service() == other, REDIS_WINDOW, step=0.25))
        records = run.join()
    finally:
        run.stop()
    after = target.counter()
    count_back = _count_back(records, kill_t)
    hello_failed = [r for r in records if r.path == "/" and r.kind != "ok"]
    count_failures = [r for r in records if r.path == "/count" and r.kind != "ok"]
    # The lost primary comes back as a replica of the new one, so the next fault has a replica too.
    target.start_services(primary)
    rejoined = _wait(lambda: target.wait_replicated(5), 90, step=1.0)
    checks, extra = count_checks(records, before, after, run.sent, run.skipped)
    checks.update({
        "count_back_within_10s": count_back is not None and count_back <= COUNT_BACK_S,
        "hello_never_failed": not hello_failed,
        "old_primary_rejoined_as_replica": rejoined is not None,
    })
    return {
        "records": records, "t0": t0,
        "faults": [{"t": round(kill_t - t0, 2), "what": f"docker kill {victim}"}]
        + ([{"t": round(kill_t + promoted - t0, 2), "what": "replica promoted", "recovery": True}] if promoted else []),
        "recover_from": [round(kill_t - t0, 2)], "checks": checks,
        "extra": {**extra, "victim": victim, "promoted_after_s": promoted, "count_back_after_s": count_back,
                  "hello_failures": len(hello_failed), "count_failures_by_kind": _kinds(count_failures),
                  "offered_rps": USERS * RATE},
        "detail": f"killed {victim}: replica promoted after {promoted} s, /count answered again after "
                  f"{count_back} s ({len(count_failures)} /count failed meanwhile, "
                  f"{_kinds(count_failures)}); GET / failures {len(hello_failed)}",
    }


def swarm_node_kill(target, timing) -> dict:
    """Kill a Swarm node that holds no Redis primary, under load sent through the other nodes' HAProxy."""
    return _swarm_kill(target, timing, target.victim_node(with_primary=False))


def swarm_primary_node_kill(target, timing) -> dict:
    """Kill the Swarm node that holds the Redis primary (and a Sentinel, an app replica, a HAProxy)."""
    return _swarm_kill(target, timing, target.victim_node(with_primary=True))


def _swarm_kill(target, timing, victim: str) -> dict:
    """Kill `victim` under load through the surviving nodes; judge the 20 s after."""
    survivors = target.load_hosts_without(victim)
    target.wait_serving(survivors)
    primary_before = target.primary_node()
    had_primary = primary_before == victim
    before = target.counter()
    run = LocustRun(survivors, USERS, RATE, timing.warm + SWARM_WINDOW + timing.tail).start()
    try:
        t0 = run.wait_started()
        _sleep_until(t0 + timing.warm)
        kill_t = time.time()
        target.kill_node(victim)
        # Polled while the load runs: the Swarm notices the node is gone, then reschedules its tasks.
        rescheduled_s = _since(kill_t, _wait(lambda: target.app_running_off(victim), RESCHEDULED_S, 1.0))
        records = run.join()
    finally:
        run.stop()
    after = target.counter()
    window = [r for r in records if kill_t <= r.start < kill_t + SWARM_WINDOW]
    failed = [r for r in window if r.kind != "ok"]
    idempotent = [r for r in window if r.path != "/count"]
    idempotent_failed = [r for r in failed if r.path != "/count"]
    # /count answers 503 while no Redis primary is elected (issue #19: "as today"): with the primary
    # on the lost node that is the failover's length, and it is reported, not hidden.
    unavailable = [r for r in failed if r.path == "/count" and r.kind == "http_503"]
    count_back = _count_back(records, kill_t)
    checks, extra = count_checks(records, before, after, run.sent, run.skipped)
    checks["app_rescheduled_within_60s"] = rescheduled_s is not None and rescheduled_s <= RESCHEDULED_S
    if had_primary:
        checks["idempotent_failures_in_20s_at_most_1%"] = len(idempotent_failed) <= SWARM_FAIL_RATIO * max(1, len(idempotent))
        checks["count_back_within_10s"] = count_back is not None and count_back <= COUNT_BACK_S
    else:
        checks["failures_in_20s_at_most_1%"] = len(failed) <= SWARM_FAIL_RATIO * max(1, len(window))
    return {
        "records": records, "t0": t0, "faults": [{"t": round(kill_t - t0, 2), "what": f"kill-node {victim}"}],
        "recover_from": [round(kill_t - t0, 2)], "checks": checks,
        "extra": {**extra, "victim": victim, "load_through": survivors, "redis_primary_was_on": primary_before,
                  "window_requests": len(window), "window_failures": len(failed),
                  "window_failure_ratio": round(len(failed) / max(1, len(window)), 5),
                  "window_idempotent_requests": len(idempotent), "window_idempotent_failures": len(idempotent_failed),
                  "window_count_503_during_failover": len(unavailable), "count_back_after_s": count_back,
                  "window_failures_by_path": _by_path(failed), "app_running_elsewhere_after_s": rescheduled_s,
                  "offered_rps": USERS * RATE},
        "detail": f"killed {victim} (Redis primary was on {primary_before}): {len(failed)} of {len(window)} "
                  f"requests through {', '.join(survivors)} failed in the 20 s after ({len(idempotent_failed)} "
                  f"idempotent, {len(unavailable)} /count 503 while no primary; /count back after {count_back} s); "
                  f"app replicas all running on surviving nodes after {rescheduled_s} s",
    }


def _since(start: float, held_at: float | None) -> float | None:
    """Seconds from start (the fault) until a condition held at held_at (epoch), or None."""
    return None if held_at is None else round(held_at - start, 2)


def _count_back(records, kill_t: float, window: float = REDIS_WINDOW) -> float | None:
    """Seconds from the kill until /count answered again: the end of the first success that started
    after the last /count failure of the window (the first success after the kill, if none failed)."""
    counts = [r for r in records if r.path == "/count" and r.start >= kill_t]
    failures = [r for r in counts if r.kind != "ok" and r.start < kill_t + window]
    after = failures[-1].start if failures else kill_t
    ends = [r.end for r in counts if r.kind == "ok" and r.start > after]
    return round(min(ends) - kill_t, 2) if ends else None


def explain(res: dict) -> str:
    """A judged scenario as readable text, every number but the timeline (for a failed test's message)."""
    return json.dumps({k: v for k, v in res.items() if k != "timeline"}, indent=1, default=str)


def _by_path(records) -> dict:
    out = {}
    for r in records:
        out.setdefault(r.path, {}).setdefault(r.kind, 0)
        out[r.path][r.kind] += 1
    return out


def _kinds(records) -> dict:
    out = {}
    for r in records:
        out[r.kind] = out.get(r.kind, 0) + 1
    return out


class ComposeChaos(ComposeProject):
    """A compose project of its own for one scenario: built, up and replicated; `down -v` at the end."""

    name = "compose"

    def __init__(self):
        env = isolated_env(APP_PORT=str(free_port()), HAPROXY_STATS_PORT=str(free_port()),
                           DASHBOARD_PORT=str(free_port()), LOCUST_WEB_PORT=str(free_port()),
                           BASELINE_PORT=str(free_port()))
        super().__init__(f"pycluster-chaos-{secrets.token_hex(3)}", env)

    def start(self) -> None:
        """Build the app image (cached layers), bring the stack up, wait for HAProxy and Redis."""
        self.compose("build", "app", timeout=900)
        try:
            self.up()
            self.wait_servers_up(len(self.running("app")))
            self.wait_replicated()
        except BaseException:
            self.down()
            raise

    def stop(self) -> None:
        """`down -v`."""
        self.down()


def swarm_target():
    """The Swarm target (imported only when the swarm scenario runs)."""
    from loadtest.stack_swarm import SwarmChaos  # noqa: PLC0415

    return SwarmChaos()


SCENARIOS = {
    "replica-kill": replica_kill,
    "redis-primary-kill": redis_primary_kill,
    "swarm-node-kill": swarm_node_kill,
    "swarm-primary-node-kill": swarm_primary_node_kill,
}
TARGETS = {"replica-kill": ComposeChaos, "redis-primary-kill": ComposeChaos, "swarm-node-kill": swarm_target,
           "swarm-primary-node-kill": swarm_target}
# Seconds each takes here, start-up and teardown included (the progress line's estimate).
PLANNED_S = {"replica-kill": 50.0, "redis-primary-kill": 60.0, "swarm-node-kill": 75.0, "swarm-primary-node-kill": 75.0}
META = {name: {"policy": "swarm" if name.startswith("swarm") else "compose", "workers": None} for name in TARGETS}
