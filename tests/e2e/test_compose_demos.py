"""The compose stack and its README demos, against the real Docker engine.

Run alone: `pytest -m e2e tests/e2e` (a few minutes; the first build pulls wheels from PyPI).
Tests share one stack and run in file order; each leaves the stack healthy for the next.
"""

import json
import subprocess
import threading
import time

import pytest
from conftest import REPLICAS

from loadtest.locust_run import LocustRun

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def docker(*argv, timeout=60):
    """Run a plain docker command and return its CompletedProcess."""
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)


def image(stack, target):
    """The tag compose gave the target's image."""
    return f"pycluster-{target}:{stack.env['IMAGE_TAG']}"


@pytest.mark.parametrize("target", ["app", "loadtest", "baseline"])
def test_images_are_non_root_without_compilers(stack, target):
    """Both images run as the unprivileged `app` user and carry no C toolchain."""
    config = json.loads(docker("image", "inspect", image(stack, target)).stdout)[0]["Config"]
    assert config["User"] == "app"
    if target != "loadtest":
        assert "/health" in " ".join(config["Healthcheck"]["Test"])
    probe = docker("run", "--rm", "--entrypoint", "sh", image(stack, target), "-c",
                   "id -u; for c in gcc cc c++ clang make; do command -v $c; done; true")
    lines = probe.stdout.split()
    assert lines[0] == "10001", probe.stdout + probe.stderr
    assert lines[1:] == [], f"compilers in the {target} image: {lines[1:]}"


def test_stack_is_up_and_healthy(stack):
    """HAProxy in front of the replicas; Redis primary and replica (AOF, unpublished) under Sentinel."""
    for service in ("redis-primary", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"):
        assert stack.health(service) == "healthy", service
    assert stack.health("app") == "healthy"
    for service in ("redis-primary", "redis-replica"):
        node = stack.container_of(service)
        assert stack.redis_cli(node, "CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]
        mounts = stack.inspect(node)["Mounts"]
        assert any(m["Type"] == "volume" and m["Destination"] == "/data" for m in mounts), mounts
    for container in stack.containers():
        published = [p for p in container.get("Publishers") or [] if p.get("PublishedPort")]
        if container["Service"] not in ("haproxy", "locust"):
            assert published == [], f"{container['Service']} must not be published on the host: {published}"

    # WORKERS is left unset, so each replica sizes itself to its share of the CPUs.
    assert stack.exec_app("printenv", "WORKERS", check=False).returncode != 0
    pids = set()
    for index in range(1, REPLICAS + 1):
        procs = stack.processes(index)
        assert procs["master"], procs
        assert len(procs["workers"]) == max(1, procs["cpus"] // REPLICAS), procs
        status = stack.exec_app("sh", "-c", f"grep '^Uid:' /proc/{procs['master']}/status", index=index).stdout.split()
        assert status[1] == "10001", f"the master runs as uid {status[1]}, not the app user"
        pids.update(procs["workers"])

    servers = set()
    for _ in range(20):  # leastconn with idle servers alternates: both answer within a few requests
        code, headers, body = stack.get("/")
        assert code == 200 and body.startswith("Hello"), (code, body)
        assert int(headers["X-Worker-Pid"]) in pids
        servers.add(headers["X-Server"])
        if len(servers) == REPLICAS:
            break
    assert len(servers) == REPLICAS, f"HAProxy sent every request to {servers}"


def test_locust_web_ui_has_a_worker(stack):
    """The Locust master serves its web UI on the published port and a locust-worker joined it."""
    code, _, body = stack.wait_http("/", 200, deadline_s=30, port=stack.locust_port)
    assert "locust" in body.lower()
    deadline = time.monotonic() + 45
    workers = []
    while time.monotonic() < deadline:
        code, _, body = stack.get("/stats/requests", port=stack.locust_port)
        if code == 200:
            workers = json.loads(body).get("workers", [])
            if workers:
                break
        time.sleep(0.5)
    assert workers, "no locust-worker connected to the Locust master\n" + stack.logs("locust-worker")


def test_headless_locust_passes_the_gate(stack):
    """A short bounded Locust run in the loadtest image: the quitting gate passes, nothing fails."""
    code, stats, stderr = stack.headless_locust(seconds=8, users=10)
    requests, failures = stack.totals(stats)
    assert code == 0, f"locust exited {code}\n{stderr[-3000:]}"
    assert requests > 0 and failures == 0, (requests, failures, stderr[-2000:])


def test_baseline_profile_serves_the_app_under_gunicorn(stack):
    """The `baseline` profile: the same app under gunicorn + gevent on its own port."""
    stack.compose("--profile", "baseline", "up", "-d", "--no-build", "--wait", "--wait-timeout", "90",
                  "baseline", timeout=150)
    try:
        code, headers, body = stack.wait_http("/", 200, deadline_s=30, port=stack.baseline_port)
        assert headers.get("Server", "").startswith("gunicorn"), headers
        assert body.startswith("Hello"), body
        assert stack.get("/count", port=stack.baseline_port)[0] == 200
    finally:
        stack.compose("--profile", "baseline", "rm", "-s", "-f", "baseline", timeout=90, check=False)


def test_crash_recovery_replaces_a_killed_worker(stack):
    """kill -9 one worker inside the container: the master forks a new one, which serves."""
    before = stack.processes()
    victim = before["workers"][0]
    stack.exec_app("python", "-c", f"import os, signal; os.kill({victim}, signal.SIGKILL)")
    after = stack.wait_workers(
        lambda p: victim not in p["workers"] and len(p["workers"]) == len(before["workers"]),
        deadline_s=10, what="a replacement worker")
    assert after["master"] == before["master"], "the master itself must survive"
    newcomers = set(after["workers"]) - set(before["workers"])
    assert newcomers, after
    # The newcomer takes requests once it is listening (its process shows up before that): ask
    # until one of them answers, bounded in time and count. Pids repeat across replicas, so only
    # answers from this replica (its HAProxy slot) count.
    slot = stack.server_of(stack.running("app")[0])
    assert slot, "HAProxy has no slot with the first replica's address"
    seen = set()
    deadline = time.monotonic() + 15
    for _ in range(3000):
        if time.monotonic() > deadline:
            break
        code, headers, body = stack.get("/")
        assert code == 200, (code, body, stack.logs("app"))
        if headers["X-Server"] == slot:
            seen.add(int(headers["X-Worker-Pid"]))
        if seen & newcomers:
            break
    assert seen & newcomers, f"no request reached the new worker {newcomers}; seen {seen}"


def wait_aof_fsync(stack, node):
    """Make sure the last write is on disk before a Redis node is SIGKILLed (appendfsync everysec)."""
    out = stack.redis_cli(node, "WAITAOF", "1", "0", "2000")
    if "ERR" not in out:
        return
    # Redis < 7.2 has no WAITAOF: an AOF rewrite writes and fsyncs a new base file with every key.
    stack.redis_cli(node, "BGREWRITEAOF")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = stack.redis_cli(node, "INFO", "persistence").replace("\r", "")
        if "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info:
            return
        time.sleep(0.2)
    raise AssertionError(f"{node}: the AOF rewrite did not finish in 30 s")


def test_redis_outage_degrades_then_recovers_with_the_counter(stack):
    """Both Redis nodes killed: state endpoints 503 with Retry-After, `/` still 200; back: the counter goes on."""
    code, _, body = stack.wait_http("/count", 200)
    views = json.loads(body)["totalViews"]
    nodes = [stack.container_of(s) for s in ("redis-primary", "redis-replica")]
    for node in nodes:
        wait_aof_fsync(stack, node)

    for node in nodes:
        stack.kill(node)
    try:
        code, headers, body = stack.wait_http("/count", 503, deadline_s=10)
        assert json.loads(body) == {"error": "redis unavailable"} and headers.get("Retry-After") == "1", (headers, body)
        # Each state request fails fast (the Sentinels answer that no primary is up), not after a hang.
        started = time.monotonic()
        assert stack.get("/session/chaos")[0] == 503
        assert time.monotonic() - started < 1.5
        assert stack.get("/health")[0] == 503
        for _ in range(5):
            code, _, body = stack.get("/")
            assert code == 200 and body.startswith("Hello"), (code, body)
        assert stack.get("/work?ms=5")[0] == 200
    finally:
        stack.start_services("redis-primary", "redis-replica")
    code, _, body = stack.wait_http("/count", 200, deadline_s=60)
    assert json.loads(body)["totalViews"] == views + 1, "the AOF volumes must keep the counter"
    stack.wait_replicated()
    stack.wait_servers_up(REPLICAS)


def cpu_ticks(stack):
    """The workers' CPU ticks of each replica."""
    return [stack.processes(index)["worker_cpu_ticks"] for index in range(1, REPLICAS + 1)]


def test_graceful_stop_finishes_the_request_in_flight(stack):
    """docker compose stop app while /work?ms=1000 runs: that request completes with 200."""
    before = stack.processes()
    ticks = cpu_ticks(stack)
    result = {}

    def slow_request():
        result["answer"] = stack.get("/work?ms=1000", timeout=30)

    thread = threading.Thread(target=slow_request)
    thread.start()
    # Stop only once the request is really running: a worker of some replica burns CPU for it.
    deadline = time.monotonic() + 10
    while not any(now >= then + 10 for now, then in zip(cpu_ticks(stack), ticks)):
        assert time.monotonic() < deadline, "the slow request did not start running in 10 s"
        time.sleep(0.1)
    started = time.monotonic()
    stack.compose("stop", "app", timeout=90)
    stopped_in = time.monotonic() - started
    thread.join(timeout=30)
    try:
        code, _, body = result["answer"]
        assert code == 200, (code, body, stack.logs("app"))
        assert json.loads(body)["ms"] == 1000
        for replica in stack.containers("app"):
            state = stack.inspect(replica["Name"])["State"]
            assert state["ExitCode"] == 0, f"the master exited {state['ExitCode']}\n" + stack.logs("app")
        # It drained, it did not wait for Docker's SIGKILL (stop_grace_period 20 s here).
        assert stopped_in < 15, f"stop took {stopped_in:.1f} s"
        assert before["master"]
    finally:
        stack.compose("start", "app")
        stack.wait_servers_up(REPLICAS)


def test_core_scaling_throughput_rises_with_workers(stack):
    """One worker in all, then two (2 replicas of WORKERS=1), under the same CPU-bound load: more served."""
    cpus = stack.processes()["cpus"]
    if cpus < 2:
        pytest.skip("needs 2 CPUs")
    rates = {}
    try:
        for replicas in (1, 2):
            stack.compose("up", "-d", "--no-build", "--no-deps", "--wait", "--wait-timeout", "60",
                          "--scale", f"app={replicas}", "app", env={"WORKERS": "1"}, timeout=120)
            stack.wait_servers_up(replicas)
            # 100 ms of CPU per request, from the host: Locust's own CPU per request stays small
            # beside the app's, so the workers, not the load generator, set the rate.
            seconds = 8
            run = LocustRun(stack.load_hosts, users=4, rate=100.0, seconds=seconds, paths=["/work?ms=100"]).start()
            run.wait_started()
            records = run.join()
            assert records and all(r.kind == "ok" for r in records), {r.kind for r in records}
            rates[replicas] = len(records) / (records[-1].end - records[0].start)
    finally:
        # Back to the default (2 replicas, WORKERS unset) for whatever runs next.
        stack.compose("up", "-d", "--no-build", "--no-deps", "--wait", "--wait-timeout", "60",
                      "--scale", f"app={REPLICAS}", "app", timeout=120)
        stack.wait_servers_up(REPLICAS)
    print(f"core scaling: /work?ms=100 req/s by workers in all: {rates}")
    # Lenient: the host's 2 CPUs also run HAProxy, Redis and Locust.
    assert rates[2] > 1.2 * rates[1], rates
