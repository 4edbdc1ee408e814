"""High availability and hardening of the compose stack (issues #19 and #17), on the session's stack.

The chaos tests run the functions `make chaos` runs (loadtest/chaos_stack.py), with shorter steady
phases before and after the fault; the goals' windows (8 s, 10 s) are the issue's.
"""

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import REPLICAS

from loadtest import chaos_stack
from loadtest.chaos import Timing, judge, verdict_line
from loadtest.stack_compose import docker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

TIMING = Timing(warm=4.0, tail=2.0)
DEV_PASSWORD = (Path(__file__).resolve().parents[2] / "deploy" / "secrets" / "redis-password.dev").read_text().strip()
REDIS_NODES = ("redis-primary", "redis-replica")


def caps(values):
    """Capability names without Docker's optional CAP_ prefix, sorted."""
    return sorted(v.upper().removeprefix("CAP_") for v in values or [])


def test_every_container_is_hardened(stack):
    """read_only, cap_drop ALL, no-new-privileges, memory/pids/nofile limits; no password in inspect."""
    containers = [c["Name"] for c in stack.containers() if c.get("State") == "running"]
    assert len(containers) >= 10, containers
    for name in containers:
        info = stack.inspect(name)
        host = info["HostConfig"]
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        assert host["ReadonlyRootfs"] is True, name
        assert caps(host["CapDrop"]) == ["ALL"], (name, host["CapDrop"])
        # Only the Redis data nodes start as root, to hand their volume to the redis user.
        assert caps(host["CapAdd"]) == (["CHOWN", "SETGID", "SETUID"] if service in REDIS_NODES else []), name
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), name
        assert host["Memory"] > 0 and host["PidsLimit"] and host["PidsLimit"] > 0, name
        nofile = [u for u in host["Ulimits"] or [] if u["Name"] == "nofile"]
        assert nofile and 0 < nofile[0]["Soft"] <= nofile[0]["Hard"], (name, host["Ulimits"])
        assert DEV_PASSWORD not in json.dumps(info), f"the Redis password shows in `docker inspect {name}`"
    # The servers themselves run unprivileged: Redis dropped root, the others never had it.
    for service in (*REDIS_NODES, "sentinel-1", "haproxy"):
        node = stack.container_of(service)
        uids = docker("exec", node, "sh", "-c",
                      "for p in /proc/[0-9]*; do c=$(cat $p/comm); case $c in redis-*|haproxy) "
                      "awk '/^Uid:/{print $2}' $p/status;; esac; done").stdout.split()
        assert uids and "0" not in uids, (service, uids)


def test_redis_needs_the_password_and_only_the_app_reaches_it(stack):
    """No password: NOAUTH from Redis and Sentinel; Locust (not on the Redis network) cannot reach them."""
    probe = r"""
import socket, sys
host, port, auth = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with socket.create_connection((host, port), timeout=3) as s:
    s.sendall((("AUTH %s\r\n" % auth) if auth else "") .encode() + b"PING\r\n")
    print(s.recv(200).decode().strip().replace("\r\n", " | "))
"""
    for host, port in (("redis-primary", 6379), ("redis-replica", 6379), ("sentinel-1", 26379)):
        out = stack.exec_app("python", "-c", probe, host, str(port), "").stdout
        assert out.startswith("-NOAUTH"), (host, out)
        out = stack.exec_app("python", "-c", probe, host, str(port), "not-the-password").stdout
        assert out.startswith(("-WRONGPASS", "-ERR invalid password")), (host, out)
    # Locust shares the edge network with HAProxy and the app, not the Redis network.
    out = stack.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "python", "locust", "-c",
                        "import socket\ntry:\n socket.getaddrinfo('redis-primary', 6379)\n print('reached')\n"
                        "except OSError as e:\n print('unreachable', e)").stdout
    assert out.startswith("unreachable"), out
    network = json.loads(docker("network", "inspect", f"{stack.project}_redis").stdout)[0]
    services = sorted({stack.inspect(c["Name"])["Config"]["Labels"]["com.docker.compose.service"]
                       for c in network["Containers"].values()})
    assert services == ["app", "redis-primary", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"], services


def test_haproxy_stats_and_prometheus_are_on_loopback(stack):
    """The stats page and /metrics answer on 127.0.0.1 only; Prometheus sees both replicas UP."""
    code, _, body = stack.get("/", port=stack.stats_port)
    assert code == 200 and "Statistics Report" in body, (code, body[:200])
    code, _, metrics = stack.get("/metrics", port=stack.stats_port)
    assert code == 200 and f'haproxy_backend_active_servers{{proxy="app"}} {REPLICAS}' in metrics, metrics[:500]
    ports = stack.inspect("haproxy")["NetworkSettings"]["Ports"]
    assert {b["HostIp"] for b in ports["8404/tcp"]} == {"127.0.0.1"}, ports
    assert {b["HostIp"] for b in ports["8000/tcp"]} == {"127.0.0.1"}, ports  # PUBLISH_ADDR in the tests


def servers_answering(stack, want, attempts=200):
    """The X-Server values seen on GET / until `want` distinct ones answered (bounded)."""
    seen = set()
    for _ in range(attempts):
        code, headers, _ = stack.get("/")
        assert code == 200, code
        seen.add(headers["X-Server"])
        if len(seen) >= want:
            break
    return seen


def test_scaling_the_app_needs_no_config_change(stack):
    """--scale app=3: HAProxy finds the third replica in Docker's DNS and sends it requests."""
    try:
        stack.compose("up", "-d", "--no-build", "--no-recreate", "--wait", "--wait-timeout", "90",
                      "--scale", "app=3", "app", timeout=150)
        stack.wait_servers_up(3)
        assert len(servers_answering(stack, 3)) == 3
    finally:
        stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", f"app={REPLICAS}", "app", timeout=150)
    stack.wait_servers_up(REPLICAS)


def run_scenario(stack, scenario):
    """One chaos function against the session's stack, judged like `make chaos` does."""
    before = stack.counter()
    out = scenario(stack, TIMING)
    res = judge(scenario.__name__, out, before, stack.counter(), "compose", {"server": "pycluster",
                                                                             "policy": "compose", "workers": None})
    print(verdict_line(res))
    return res


def test_replica_kill_under_load_meets_the_goals(stack):
    """docker kill of one replica under load: <= 0.5% failed in the 8 s after, none idempotent, capacity back <= 5 s."""
    res = run_scenario(stack, chaos_stack.replica_kill)
    assert res["passed"], chaos_stack.explain(res)


def test_a_draining_replica_reports_not_ready(stack):
    """docker stop of a replica with slow requests in flight: its /ready answers 503 before it exits,
    HAProxy takes it out of rotation, and the slow requests complete."""
    index = len(stack.running("app"))
    replica = stack.running("app")[index - 1]
    ticks = stack.processes(index)["worker_cpu_ticks"]
    # Three requests of 1 s of CPU each keep its one worker draining for ~3 s. Their statuses are
    # printed once all have ended: print() from three threads at once can run two lines together.
    slow = subprocess.Popen(
        ["docker", "exec", replica, "python", "-c",
         "import threading, urllib.request\n"
         "got = []\n"
         "def one(): got.append(urllib.request.urlopen('http://127.0.0.1:8000/work?ms=1000', timeout=30).status)\n"
         "ts = [threading.Thread(target=one) for _ in range(3)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
         "print(*got, sep='\\n')"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Inside the replica: GET /ready every 50 ms until the master is gone; one status per line.
    poll = subprocess.Popen(
        ["docker", "exec", replica, "python", "-c",
         "import time, urllib.request, urllib.error\n"
         "end = time.time() + 30\n"
         "while time.time() < end:\n"
         " try: s = urllib.request.urlopen('http://127.0.0.1:9100/ready', timeout=1).status\n"
         " except urllib.error.HTTPError as e: s = e.code\n"
         " except OSError: s = 0\n"
         " print(s, flush=True)\n"
         " if s == 0: break\n"
         " time.sleep(0.05)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_of_rotation = threading.Event()

    def watch_haproxy():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not out_of_rotation.is_set():
            if list(stack.haproxy_servers().values()).count("UP") == REPLICAS - 1:
                out_of_rotation.set()
            time.sleep(0.1)

    try:
        # Stop once the slow requests are running (the worker burns CPU for them; they last ~3 s).
        stack.wait_workers(lambda p: p["worker_cpu_ticks"] >= ticks + 10, deadline_s=10,
                           what="the slow requests to be running", index=index)
        watcher = threading.Thread(target=watch_haproxy)
        watcher.start()
        docker("stop", "-t", "20", replica, timeout=60)
        statuses = [int(x) for x in poll.communicate(timeout=40)[0].split()]
        answers = slow.communicate(timeout=40)[0].split()
        watcher.join(timeout=35)
        assert answers == ["200", "200", "200"], answers
        assert 503 in statuses, f"/ready never answered 503 while the replica drained: {statuses}"
        assert out_of_rotation.is_set(), "HAProxy kept the draining replica in rotation"
    finally:
        for proc in (slow, poll):
            if proc.poll() is None:
                proc.kill()
        stack.start_services("app")
        stack.wait_servers_up(REPLICAS)


def test_redis_primary_kill_under_load_meets_the_goals(stack):
    """docker kill of the Redis primary under load: /count back <= 10 s, nothing lost or counted twice."""
    res = run_scenario(stack, chaos_stack.redis_primary_kill)
    assert res["passed"], chaos_stack.explain(res)
