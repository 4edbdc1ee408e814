"""Operating the cluster: rolling restart, watchdog, scaling, recycling, ctl, metrics."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from support import ROOT, alive, as_nobody, free_port, get, wait_for

APP_V1 = '''
import os
def app(environ, start_response):
    start_response("200 OK", [("X-Worker-Pid", str(os.getpid()))])
    return [b"VERSION"]
'''




class Load:
    """Steady traffic from two clients (keep-alive and new connections), failures recorded."""

    def __init__(self, url, path="/"):
        self.url, self.path = url, path
        self.ok, self.failures, self.bodies = 0, [], set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(keep,)) for keep in (True, False)]

    def _run(self, keep_alive):
        session = requests.Session() if keep_alive else None
        deadline = time.monotonic() + 60  # bounded, whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                response = (session.get(self.url + self.path, timeout=5) if session
                            else get(self.url + self.path))
                if response.status_code == 200:
                    self.ok += 1
                    self.bodies.add(response.text)
                else:
                    self.failures.append(response.status_code)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self):
        for t in self.threads:
            t.start()
        wait_for(lambda: self.ok >= 20, timeout=10, what="load to start")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def write_app(directory, text):
    (directory / "reloadable.py").write_text(APP_V1.replace("VERSION", text))


# Workers forked from a template that imported the app (the default), and fresh interpreters.
TEMPLATE_OR_NOT = pytest.mark.parametrize("fork_template", ["1", "0"], ids=["template", "fresh"])


@TEMPLATE_OR_NOT
def test_rolling_restart_under_load_loses_nothing_and_loads_new_code(master, tmp_path, fork_template):
    write_app(tmp_path, "v1")
    m = master(app="reloadable:app", workers=2,
               env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "PYTHONDONTWRITEBYTECODE": "1",
                    "FORK_TEMPLATE": fork_template})
    old = set(m.workers())
    with Load(m.url) as load:
        write_app(tmp_path, "v2")
        m.signal(signal.SIGUSR2)
        wait_for(lambda: "Rolling restart done: 2 workers replaced" in m.log(), timeout=30, what="the restart")
        ok_before_end = load.ok
        wait_for(lambda: load.ok > ok_before_end + 20, timeout=10)
    assert load.failures == []
    assert not (set(m.workers()) & old) and len(m.workers()) == 2
    assert get(m.url).text == "v2" and {"v1", "v2"} <= load.bodies
    assert m.status()["master"]["reload"]["state"] == "done"


@TEMPLATE_OR_NOT
def test_broken_new_version_keeps_the_old_workers(master, tmp_path, fork_template):
    write_app(tmp_path, "v1")
    m = master(app="reloadable:app", workers=2,
               env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "PYTHONDONTWRITEBYTECODE": "1",
                    "FORK_TEMPLATE": fork_template})
    old = set(m.workers())
    (tmp_path / "reloadable.py").write_text("this is not python\n")
    with Load(m.url) as load:
        assert m.ctl("reload").returncode == 0
        wait_for(lambda: "rolling restart stopped" in m.log(), timeout=20, what="the failed restart")
        time.sleep(0.5)  # keep the load running a little after the failure
    assert load.failures == []
    assert "cannot load app 'reloadable:app': NameError" in m.log()  # the reason, in one line
    assert set(m.workers()) == old and load.bodies == {"v1"}
    status = m.status()["master"]
    assert status["reload"]["state"] == "failed" and "NameError" in status["reload"]["error"]
    assert m.proc.poll() is None


def test_sigstopped_worker_is_replaced_with_its_stack_in_the_log(master):
    m = master("--worker-timeout", "2", workers=2)
    victim = m.workers()[0]
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_for(lambda: not alive(victim) and len(m.listening_workers()) == 2, timeout=6, what="the replacement")
    assert time.monotonic() - stopped_at <= 2 + 1 + 1.5  # timeout + 1 s, plus the new worker's boot
    log = m.log()
    assert f"Worker {victim} timed out" in log
    assert "most recent call first" in log  # faulthandler's dump of every thread


def test_long_healthy_request_is_not_killed_but_a_stuck_loop_is(master):
    # Without time slices, a request that computes holds the loop: the way to get a stuck loop
    # here. With them (the default) the same spin yields every slice and the heartbeats go on
    # (test_a_spinning_request_keeps_its_worker_alive_under_time_slices).
    m = master("--worker-timeout", "1", "--time-slice", "0", workers=1)
    pid = m.workers()[0]
    response = get(f"{m.url}/sleep?s=3", timeout=10)  # waits on I/O three times the timeout
    assert response.status_code == 200 and int(response.headers["X-Worker-Pid"]) == pid
    assert alive(pid) and "timed out" not in m.log()
    with pytest.raises(requests.RequestException):
        get(f"{m.url}/spin?s=30", timeout=15)  # hogs the worker's loop: the watchdog kills it
    assert f"Worker {pid} timed out" in m.log()
    wait_for(lambda: len(m.listening_workers()) == 1, timeout=5)


def test_a_spinning_request_keeps_its_worker_alive_under_time_slices(master):
    m = master("--worker-timeout", "1", workers=1)
    pid = m.workers()[0]
    response = get(f"{m.url}/spin?s=3", timeout=10)  # three times the timeout, computing all along
    assert response.status_code == 200 and int(response.headers["X-Worker-Pid"]) == pid
    assert alive(pid) and "timed out" not in m.log()


def test_scale_up_and_down(master):
    m = master(workers=2)
    first = sorted(m.workers())
    assert m.ctl("scale", "4").returncode == 0
    wait_for(lambda: len(m.listening_workers()) == 4, timeout=10, what="4 workers")
    newest = max(m.status()["workers"], key=lambda w: w["id"])["pid"]
    assert m.ctl("scale", "1").returncode == 0
    wait_for(lambda: len(m.workers()) == 1, timeout=15, what="1 worker")
    assert m.workers() == [newest]  # scaling down drained the oldest first
    assert not any(alive(p) for p in first)
    m.signal(signal.SIGTTIN)
    wait_for(lambda: len(m.listening_workers()) == 2, timeout=10, what="SIGTTIN")
    m.signal(signal.SIGTTOU)
    wait_for(lambda: len(m.workers()) == 1, timeout=15, what="SIGTTOU")
    bad = m.ctl("scale", "0")
    assert bad.returncode == 1 and "at least 1" in bad.stderr


def test_max_requests_recycles_under_load_without_failures(master):
    m = master("--max-requests", "40", "--max-requests-jitter", "10", workers=2)
    old = set(m.workers())
    with Load(m.url) as load:
        wait_for(lambda: m.log().count("recycling") >= 2 and not (set(m.listening_workers()) & old), timeout=30,
                 what="recycled workers")
    assert load.failures == []
    assert m.status()["master"]["restarts"].get("max-requests", 0) >= 2


def test_ctl_status_json_matches_the_processes(master):
    m = master(workers=3)
    for _ in range(10):
        get(m.url)
    wait_for(lambda: m.status()["master"]["requests_total"] >= 10, timeout=5, what="heartbeats")
    status = m.status()
    assert sorted(w["pid"] for w in status["workers"]) == sorted(m.workers())
    for worker in status["workers"]:
        assert {"id", "pid", "state", "requests", "in_flight", "rss", "uptime", "restarts"} <= set(worker)
        assert worker["state"] == "listening" and worker["rss"] > 1_000_000
    assert status["master"]["pid"] == m.pid and status["master"]["policy"] == "rr"
    table = m.ctl("status").stdout
    assert "IN FLIGHT" in table and all(str(p) in table for p in m.workers())


def test_ctl_kill_worker_and_broadcast(master):
    m = master(workers=2)
    victim = m.status()["workers"][0]
    assert m.ctl("kill-worker", str(victim["id"])).returncode == 0
    wait_for(lambda: not alive(victim["pid"]) and len(m.listening_workers()) == 2, timeout=5)
    assert m.status()["master"]["restarts"]["crash"] == 1
    done = m.ctl("broadcast", '{"cmd": "hello"}')
    assert done.returncode == 0 and "sent to 2 workers" in done.stdout
    bad = m.ctl("kill-worker", "999")
    assert bad.returncode == 1 and "no live worker" in bad.stderr
    assert m.ctl("broadcast", "{not json").returncode == 1


def test_ctl_without_a_master_is_a_clear_error(tmp_path):
    out = subprocess.run([os.sys.executable, "-m", "master", "ctl", "--socket", str(tmp_path / "none.sock"),
                          "status"], capture_output=True, text=True, cwd=ROOT, timeout=10)
    assert out.returncode == 1 and "is the master running?" in out.stderr and "Traceback" not in out.stderr


def test_metrics_parse_and_counters_never_go_back(master):
    port = free_port()
    m = master(workers=2, env={"METRICS_BIND": f"127.0.0.1:{port}"})

    def scrape():
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return {s.name + json.dumps(s.labels, sort_keys=True): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}
    for _ in range(30):
        get(m.url)
    wait_for(lambda: scrape().get("pycluster_requests_total{}", 0) >= 30, timeout=5, what="30 requests counted")
    before = scrape()
    os.kill(m.workers()[0], signal.SIGKILL)
    wait_for(lambda: len(m.listening_workers()) == 2, timeout=5)
    wait_for(lambda: scrape().get('pycluster_worker_restarts_total{"reason": "crash"}') == 1, timeout=5)
    after = scrape()
    assert after["pycluster_requests_total{}"] >= before["pycluster_requests_total{}"]
    assert after['pycluster_workers{"state": "listening"}'] == 2
    assert 'pycluster_info{"app": "apps.hello:app", "bind": "127.0.0.1:%d", "policy": "rr"}' % m.port in after


def test_ready_follows_the_master_and_the_admin_port_answers_errors_cleanly(master):
    port = free_port()
    m = master("--graceful-timeout", "5", workers=1, env={"METRICS_BIND": f"127.0.0.1:{port}"})
    base = f"http://127.0.0.1:{port}"
    assert requests.get(base + "/ready", timeout=5).json() == {"ready": True}
    assert requests.get(base + "/nope", timeout=5).status_code == 404
    assert requests.post(base + "/ready", timeout=5).status_code == 405
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GARBAGE\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    # Draining: a load balancer must stop sending traffic before the workers go.
    slow = ThreadPoolExecutor(1).submit(lambda: requests.get(m.url + "/sleep?s=2", timeout=10))
    wait_for(lambda: m.status()["workers"][0]["in_flight"] == 1, timeout=5, what="the slow request in flight")
    m.signal(signal.SIGTERM)
    wait_for(lambda: requests.get(base + "/ready", timeout=5).status_code == 503, timeout=5, what="not ready")
    assert slow.result().status_code == 200


def test_control_socket_refuses_another_user(master, tmp_path):
    m = master(workers=1)
    assert oct(os.stat(m.socket_path).st_mode & 0o777) == "0o600"
    os.chmod(tmp_path, 0o755)  # let the other user reach the socket file itself
    wrapped = as_nobody([os.sys.executable, "-m", "master", "ctl", "--socket", m.socket_path, "status"])
    assert wrapped is not None, "this test runs ctl as user nobody: it needs root and /usr/bin/python3"
    argv, env = wrapped
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=10)
    assert out.returncode == 1 and "permission denied" in out.stderr and "Traceback" not in out.stderr
    assert m.ctl("status").returncode == 0
