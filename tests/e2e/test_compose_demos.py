"""The compose stack and its README demos, against the real Docker engine.

Run alone: `pytest -m e2e tests/e2e` (a few minutes; the first build pulls wheels from PyPI).
Tests share one stack and run in file order; each leaves the stack healthy for the next.
"""

import json
import subprocess
import threading
import time

import pytest

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
    """Redis (AOF, unpublished) and the app (healthy, one worker per CPU, non-root) are up."""
    assert stack.health("redis") == "healthy"
    assert stack.health("app") == "healthy"
    aof = stack.compose("exec", "-T", "redis", "redis-cli", "config", "get", "appendonly").stdout.split()
    assert aof == ["appendonly", "yes"]
    for container in stack.containers("redis"):
        published = [p for p in container.get("Publishers") or [] if p.get("PublishedPort")]
        assert published == [], f"redis must not be published on the host: {published}"
    mounts = stack.inspect("redis")["Mounts"]
    assert any(m["Type"] == "volume" and m["Destination"] == "/data" for m in mounts), mounts

    # WORKERS is left unset, so the master sizes itself to the CPUs the container may use.
    assert stack.exec_app("printenv", "WORKERS", check=False).returncode != 0
    procs = stack.processes()
    assert procs["master"], procs
    assert len(procs["workers"]) == procs["cpus"], procs
    status = stack.exec_app("sh", "-c", f"grep '^Uid:' /proc/{procs['master']}/status").stdout.split()
    assert status[1] == "10001", f"the master runs as uid {status[1]}, not the app user"

    code, headers, body = stack.get("/")
    assert code == 200 and body.startswith("Hello"), (code, body)
    assert int(headers["X-Worker-Pid"]) in procs["workers"]


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
    # until one of them answers, bounded in time and count.
    seen = set()
    deadline = time.monotonic() + 15
    for _ in range(3000):
        if time.monotonic() > deadline:
            break
        code, headers, body = stack.get("/")
        assert code == 200, (code, body, stack.logs("app"))
        seen.add(int(headers["X-Worker-Pid"]))
        if seen & newcomers:
            break
    assert seen & newcomers, f"no request reached the new worker {newcomers}; seen {seen}"


def wait_aof_fsync(stack):
    """Make sure the last write is on disk before Redis is SIGKILLed (appendfsync everysec)."""
    done = stack.compose("exec", "-T", "redis", "redis-cli", "WAITAOF", "1", "0", "2000", check=False)
    if done.returncode != 0 or "ERR" in done.stdout:
        # Redis < 7.2 has no WAITAOF: everysec fsyncs within a second; give it two.
        time.sleep(2.0)


def test_redis_chaos_degrades_then_recovers_with_the_counter(stack):
    """docker compose kill redis → 503 on state, `/` still 200; start redis → the counter goes on."""
    code, _, body = stack.wait_http("/count", 200)
    views = json.loads(body)["totalViews"]
    wait_aof_fsync(stack)

    stack.compose("kill", "redis")
    try:
        stack.wait_http("/count", 503, deadline_s=10)
        assert stack.get("/session/chaos")[0] == 503
        assert stack.get("/health")[0] == 503
        for _ in range(5):
            code, _, body = stack.get("/")
            assert code == 200 and body.startswith("Hello"), (code, body)
        assert stack.health("redis") != "healthy"
    finally:
        stack.compose("start", "redis")
    stack.wait_health("redis", deadline_s=60)
    code, _, body = stack.wait_http("/count", 200, deadline_s=30)
    assert json.loads(body)["totalViews"] == views + 1, "the AOF volume must keep the counter"
    stack.wait_health("app", deadline_s=30)


def test_graceful_stop_finishes_the_request_in_flight(stack):
    """docker compose stop app while /work?ms=1000 runs: that request completes with 200."""
    before = stack.processes()
    result = {}

    def slow_request():
        result["answer"] = stack.get("/work?ms=1000", timeout=30)

    thread = threading.Thread(target=slow_request)
    thread.start()
    # Stop only once the request is really running: a worker burns CPU for it (0.1 s seen).
    stack.wait_workers(lambda p: p["worker_cpu_ticks"] >= before["worker_cpu_ticks"] + 10, deadline_s=10,
                       what="the slow request to be running")
    started = time.monotonic()
    stack.compose("stop", "app", timeout=90)
    stopped_in = time.monotonic() - started
    thread.join(timeout=30)
    try:
        code, _, body = result["answer"]
        assert code == 200, (code, body, stack.logs("app"))
        assert json.loads(body)["ms"] == 1000
        state = stack.inspect("app")["State"]
        assert state["ExitCode"] == 0, f"the master exited {state['ExitCode']}\n" + stack.logs("app")
        # It drained, it did not wait for Docker's SIGKILL (stop_grace_period 20 s here).
        assert stopped_in < 15, f"stop took {stopped_in:.1f} s"
        assert before["master"]
    finally:
        stack.compose("start", "app")
        stack.wait_health("app", deadline_s=60)


def test_core_scaling_throughput_rises_with_workers(stack):
    """WORKERS=1 then WORKERS=2 under the same CPU-bound load: the second serves more."""
    cpus = stack.processes()["cpus"]
    if cpus < 2:
        pytest.skip("needs 2 CPUs")
    rates = {}
    try:
        for workers in (1, 2):
            stack.compose("up", "-d", "--no-build", "--no-deps", "--wait", "--wait-timeout", "60", "app",
                          env={"WORKERS": str(workers)}, timeout=120)
            stack.wait_workers(lambda p, n=workers: len(p["workers"]) == n, deadline_s=30,
                               what=f"{workers} workers")
            seconds = 8
            code, stats, stderr = stack.headless_locust(
                seconds=seconds, users=8, extra=["WorkUser"], env={"LOCUST_MAX_P95_MS": "10000"})
            requests, failures = stack.totals(stats)
            assert code == 0 and failures == 0, (code, failures, stderr[-2000:])
            rates[workers] = requests / seconds
    finally:
        # Back to the default (WORKERS unset) for whatever runs next.
        stack.compose("up", "-d", "--no-build", "--no-deps", "--wait", "--wait-timeout", "60", "app",
                      timeout=120)
    print(f"core scaling: /work req/s by WORKERS: {rates}")
    # Lenient: Locust shares these CPUs with the app, so 2 workers will not double 1.
    assert rates[2] > 1.2 * rates[1], rates
