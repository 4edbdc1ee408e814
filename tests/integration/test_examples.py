"""Every example under examples/ runs as documented (the seed's programs, in Python)."""
import os
import signal
import subprocess
import threading

import pytest

from support import PYTHON, ROOT, children, free_port, get, wait_for


class Example:
    """An example program running in the background, its output collected."""

    def __init__(self, name, *args, **env):
        self.port = free_port()
        self.lines = []
        full_env = dict(os.environ, PORT=str(self.port), WORKERS="2", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
        full_env.update({k: str(v) for k, v in env.items()})
        self.proc = subprocess.Popen([PYTHON, str(ROOT / "examples" / f"{name}.py"), *args], cwd=ROOT, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_output(self, text, count=1, timeout=15):
        wait_for(lambda: self.output.count(text) >= count, timeout, what=f"{text!r} x{count} in:\n{self.output}")

    def pid_answering(self, path="/"):
        return int(get(f"http://127.0.0.1:{self.port}{path}").headers["X-Worker-Pid"])

    def serving(self):
        try:
            return self.pid_answering()
        except Exception:  # noqa: BLE001 - not up yet
            return None

    def close(self):
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(5)


@pytest.fixture
def example():
    running = []

    def start(name, *args, **env):
        running.append(Example(name, *args, **env))
        return running[-1]
    yield start
    for ex in running:
        ex.close()


def test_basic_cluster(example):
    ex = example("basic_cluster")
    ex.wait_output("Worker ", count=2)
    pids = set()
    wait_for(lambda: pids.add(ex.serving()) or len(pids - {None}) == 2, what="both workers to serve")
    assert set(children(ex.proc.pid)) == pids - {None}
    assert f"Primary {ex.proc.pid} is running" in ex.output
    ex.proc.send_signal(signal.SIGINT)
    assert ex.proc.wait(10) == 0


def test_production_ready_restarts_and_shuts_down(example):
    ex = example("production_ready")
    ex.wait_output("is online", count=2)
    wait_for(ex.serving)
    victim = ex.pid_answering()
    os.kill(victim, signal.SIGKILL)
    ex.wait_output(f"Worker {victim} died with code: None, and signal: SIGKILL")
    ex.wait_output("Starting a new worker")
    ex.wait_output("is online", count=3)
    ex.proc.send_signal(signal.SIGTERM)
    assert ex.proc.wait(15) == 0
    assert "All workers exited" in ex.output and ex.output.count("disconnected") >= 2


def test_worker_communication_counts_across_workers(example):
    ex = example("worker_communication")
    wait_for(ex.serving)
    for _ in range(5):
        get(f"http://127.0.0.1:{ex.port}/")
    served = 1 + 5  # the readiness probe counted too

    def total():
        return get(f"http://127.0.0.1:{ex.port}/count").json()["total"] >= served
    wait_for(total, timeout=5, what="the primary's total to include every request")


def test_zero_downtime_restart_on_sigusr2(example):
    ex = example("zero_downtime_restart")
    wait_for(ex.serving)
    ex.wait_output("is running")
    old = set(children(ex.proc.pid))
    failures, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                if get(f"http://127.0.0.1:{ex.port}/").status_code != 200:
                    failures.append("status")
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))
    client = threading.Thread(target=load)
    client.start()
    try:
        ex.proc.send_signal(signal.SIGUSR2)
        ex.wait_output("Rolling restart complete", timeout=30)
    finally:
        stop.set()
        client.join(10)
    new = set(children(ex.proc.pid))
    assert len(new) == 2 and not (old & new)
    assert failures == []


def test_load_balancing_rr_is_even(example):
    ex = example("load_balancing", "rr", "--workers", "2", "--requests", "200")
    assert ex.proc.wait(30) == 0
    ex.wait_output("policy rr: 200 new connections")
    assert ex.output.count("100 (50.0%)") == 2


def test_load_balancing_rejects_unknown_policy(example):
    ex = example("load_balancing", "fastest")
    assert ex.proc.wait(10) != 0
    ex.wait_output("unknown scheduling policy 'fastest'")
    assert "Traceback" not in ex.output


def test_monitoring_prints_a_table(example):
    ex = example("monitoring", INTERVAL="0.5", ROUNDS="2")
    assert ex.proc.wait(20) == 0
    assert ex.output.count("REQUESTS") == 2
    # The first table may come before the second worker has answered (a slow start under load);
    # the last one has both.
    last = ex.output.rsplit("REQUESTS", 1)[1].splitlines()
    rows = [line.split() for line in last if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and all(float(row[3]) > 1 for row in rows)  # RSS in MiB


def test_flask_cluster_with_the_cluster_api(example):
    ex = example("flask_cluster")
    pids = set()
    wait_for(lambda: pids.add(ex.serving()) or len(pids - {None}) == 2, what="both workers")
    health = get(f"http://127.0.0.1:{ex.port}/health").json()
    assert health["status"] == "ok" and health["pid"] in pids


def test_flask_cluster_under_the_master(tmp_path):
    from support import Master

    m = Master(tmp_path, "examples.flask_cluster:app", 2).start()
    try:
        m.wait_ready(2)
        assert get(f"{m.url}/").text.startswith("Hello from worker ")
        assert get(f"{m.url}/health").json()["status"] == "ok"
    finally:
        m.kill_all()


def test_redis_state_counts_across_workers(example, redis_server):
    ex = example("redis_state", REDIS_URL=redis_server.url)
    pids = set()
    wait_for(lambda: pids.add(ex.serving()) or len(pids - {None}) == 2, what="both workers")
    views = [get(f"http://127.0.0.1:{ex.port}/count").json() for _ in range(6)]
    assert [v["totalViews"] for v in views] == list(range(1, 7))
    assert {v["worker"] for v in views} == pids - {None}
    put = __import__("requests").put(f"http://127.0.0.1:{ex.port}/session/abc", json={"user": "ada"}, timeout=5)
    assert put.status_code == 201
    assert get(f"http://127.0.0.1:{ex.port}/session/abc").json() == {"session": {"user": "ada"}}


def test_redis_state_without_redis_url_starts_its_own_redis(example, tmp_path):
    ex = example("redis_state", REDIS_URL="", REDIS_DATA_DIR=str(tmp_path / "redis"))
    ex.wait_output("Embedded Redis at redis://127.0.0.1:")
    wait_for(lambda: ex.serving(), what="a worker")
    counts = [get(f"http://127.0.0.1:{ex.port}/count").json()["totalViews"] for _ in range(3)]
    assert counts == [1, 2, 3]
    assert list((tmp_path / "redis").glob("appendonly.aof*"))
