"""Scheduling policies: rr, shared, reuseport — real masters, real connections."""
import os
import signal
import socket
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from master.scheduling.rr.handle import MAX_IN_FLIGHT
from support import ROOT, Master, as_nobody, events, get, run_program, wait_for, worker_pid




@pytest.mark.parametrize("policy", ["rr", "shared", "reuseport"])
def test_several_workers_serve(master, policy):
    m = master("--policy", policy, workers=3)
    with ThreadPoolExecutor(8) as pool:
        pids = Counter(pool.map(lambda _: worker_pid(m.port), range(300)))
    assert set(pids) <= set(m.workers())
    assert len(pids) >= (3 if policy != "shared" else 2), pids  # shared: the kernel decides
    assert f"(policy {policy})" in m.log()


@pytest.mark.parametrize("policy", ["rr", "shared", "reuseport"])
def test_the_app_sees_the_real_client_address(master, policy):
    m = master("--policy", policy, workers=2)
    for _ in range(4):  # rr passes the address along with the connection: check both workers
        # Read to the end: under rr the primary still holds a copy, so this also checks
        # that the worker's close reaches the client (a timeout here means it did not).
        with socket.create_connection(("127.0.0.1", m.port), timeout=5) as client:
            client.sendall(b"GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := client.recv(4096):
                response += chunk
            host, port = client.getsockname()
        assert response.endswith(f"{host}:{port}".encode()), response


def test_rr_spreads_sequential_new_connections_evenly(master):
    m = master("--policy", "rr", workers=3)
    counts = Counter(worker_pid(m.port) for _ in range(400))
    even = 400 / 3
    assert len(counts) == 3
    assert all(abs(c - even) <= 0.2 * even for c in counts.values()), counts


def test_rr_reroutes_a_connection_whose_worker_dies_before_taking_it(master):
    m = master("--policy", "rr", workers=2)
    victim, survivor = m.workers()
    os.kill(victim, signal.SIGSTOP)  # it cannot take its handoff now
    results = []
    n_clients = MAX_IN_FLIGHT + 4  # more than the stopped worker may hold: the survivor must serve some

    def one():
        started = time.monotonic()
        response = get(m.url, timeout=15)
        results.append((int(response.headers["X-Worker-Pid"]), time.monotonic() - started))
    clients = [threading.Thread(target=one) for _ in range(n_clients)]
    for c in clients:
        c.start()
    # The stopped worker holds at most MAX_IN_FLIGHT handoffs; the survivor serves the rest.
    wait_for(lambda: len(results) >= n_clients - MAX_IN_FLIGHT, timeout=10, what="the other requests")
    time.sleep(0.5)  # the stalled handoff is still waiting: it would be lost if we dropped it
    os.kill(victim, signal.SIGKILL)
    for c in clients:
        c.join(15)
    assert len(results) == n_clients  # every accepted connection was served
    assert victim not in {pid for pid, _ in results}
    assert max(seconds for _, seconds in results) >= 0.5  # one waited for the re-route


def _open_sockets(pid):
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def test_rr_rescues_connections_a_killed_worker_took_but_never_touched(master):
    m = master("--policy", "rr", workers=2)
    victim, survivor = m.workers()
    before = {pid: _open_sockets(pid) for pid in (victim, survivor)}
    # Connected but silent clients: each worker takes its share and waits for a request line.
    clients = [socket.create_connection(("127.0.0.1", m.port), timeout=10) for _ in range(8)]
    try:
        wait_for(lambda: _open_sockets(victim) - before[victim] >= 4 and _open_sockets(survivor) - before[survivor] >= 4,
                 timeout=10, what="both workers holding their connections")
        os.kill(victim, signal.SIGKILL)  # it read nothing from them and wrote nothing to them
        m.wait_ready(2)
        pids = []
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := client.recv(4096):
                response += chunk
            assert response.startswith(b"HTTP/1.1 200"), response
            pids.append(int(response.split(b"X-Worker-Pid: ")[1].split(b"\r\n")[0]))
        assert victim not in pids and len(pids) == 8  # its four were served by another worker
    finally:
        for client in clients:
            client.close()


def test_rr_refused_handoff_goes_to_another_worker():
    done = run_program("scenarios", "rr_refuse", env={"CLUSTER_SCHED_POLICY": "rr"})
    assert done.returncode == 0, done.stderr
    served = next(e for e in events(done.stdout) if e["event"] == "served")
    assert len(served["pids"]) == 20 and served["drained_pid"] not in served["pids"]
    assert served["refused"] >= 1


def _set_migrate_req(value):
    with open("/proc/sys/net/ipv4/tcp_migrate_req", "w") as f:
        f.write(value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to set the sysctl")
def test_reuseport_sets_tcp_migrate_req_when_it_may(master):
    _set_migrate_req("0")
    m = master("--policy", "reuseport", workers=2)
    assert open("/proc/sys/net/ipv4/tcp_migrate_req").read().strip() == "1"
    assert "set net.ipv4.tcp_migrate_req=1" in m.log()
    with ThreadPoolExecutor(4) as pool:
        assert len(set(pool.map(lambda _: worker_pid(m.port), range(100)))) == 2


def test_reuseport_without_permission_warns_and_still_serves(tmp_path):
    run_dir = tmp_path / "nobody"
    run_dir.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(run_dir, 0o777)
    # No control socket: nobody could not reach one under root's pytest directory (0700),
    # and a master refuses a control socket it cannot make safely.
    m = Master(run_dir, "apps.hello:app", 2, "--policy", "reuseport", env={"CONTROL_SOCKET": "none"})
    wrapped = as_nobody(m.argv, extra_path=[str(ROOT / "tests")])
    if wrapped is None:
        pytest.skip("cannot run as another user here")
    m.argv, env = wrapped
    m.env.update(PYTHONPATH=env["PYTHONPATH"])
    if os.geteuid() == 0:
        _set_migrate_req("0")
    m.start()
    try:
        wait_for(lambda: _up(m) and len(m.workers()) == 2, timeout=20, what=f"workers as nobody\n{m.log()}")
        assert "cannot set net.ipv4.tcp_migrate_req=1 (Permission denied)" in m.log()
        with ThreadPoolExecutor(4) as pool:
            assert len(set(pool.map(lambda _: worker_pid(m.port), range(100)))) == 2
    finally:
        m.kill_all()
        _set_migrate_req("1")


def _up(m):
    try:
        get(m.url, timeout=1)
        return True
    except Exception:  # noqa: BLE001
        return False


def _serving_worker(m, other_than=None):
    """The pid of the worker running the app for our one request (the control socket says)."""
    def busy():
        serving = [w["pid"] for w in m.status()["workers"] if w["in_flight"] and w["pid"] != other_than]
        return serving[0] if serving else None
    return wait_for(busy, timeout=10, what="a worker serving the request")


def _request_in_background(method, url, **kwargs):
    outcome = {}

    def call():
        try:
            outcome["response"] = requests.request(method, url, timeout=20, **kwargs)
        except requests.RequestException as exc:
            outcome["error"] = exc
    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def test_rr_retries_a_get_whose_worker_is_killed_mid_request(master):
    m = master("--policy", "rr", workers=2)
    thread, outcome = _request_in_background("GET", f"{m.url}/sleep?s=3")
    victim = _serving_worker(m)
    os.kill(victim, signal.SIGKILL)  # it has the request and has not answered
    thread.join(20)
    response = outcome.get("response")
    assert response is not None, outcome.get("error")
    assert response.status_code == 200 and int(response.headers["X-Worker-Pid"]) != victim


def test_rr_retries_a_killed_request_only_once(master):
    m = master("--policy", "rr", workers=2)
    thread, outcome = _request_in_background("GET", f"{m.url}/sleep?s=3")
    first = _serving_worker(m)
    os.kill(first, signal.SIGKILL)
    second = _serving_worker(m, other_than=first)
    os.kill(second, signal.SIGKILL)  # a request that keeps getting its worker killed is dropped
    thread.join(20)
    assert "error" in outcome and "response" not in outcome


@pytest.mark.parametrize("method,flags", [("POST", ()), ("GET", ("--retry-idempotent", "0"))])
def test_rr_does_not_retry_a_post_or_with_retries_off(master, method, flags):
    m = master("--policy", "rr", *flags, workers=2)
    thread, outcome = _request_in_background(method, f"{m.url}/sleep?s=3", data=b"x" * 10)
    victim = _serving_worker(m)
    os.kill(victim, signal.SIGKILL)
    thread.join(20)
    assert "error" in outcome and "response" not in outcome


@pytest.mark.parametrize("policy", ["rr", "shared"])
def test_a_handler_can_rule_out_its_retry(master, policy):
    # environ["pycluster.no_retry"]() before a side effect: killed afterwards, the GET is not
    # served again (the app's /count does this); under shared it is there and does nothing.
    m = master("--policy", policy, workers=2)
    assert get(f"{m.url}/sleep?s=0&no_retry=1").status_code == 200
    thread, outcome = _request_in_background("GET", f"{m.url}/sleep?s=3&no_retry=1")
    victim = _serving_worker(m)
    os.kill(victim, signal.SIGKILL)
    thread.join(20)
    assert "error" in outcome and "response" not in outcome


def test_rr_does_not_pass_on_a_request_that_crashed_its_worker(master):
    m = master("--policy", "rr", workers=2)
    before = set(m.workers())
    with pytest.raises(requests.RequestException):
        get(f"{m.url}/exit", timeout=10)  # os._exit(1) while serving: the request is to blame
    m.wait_ready(2)
    assert len(before & set(m.workers())) == 1  # the other worker never got it, so it lives on


TCPI_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in struct tcp_info (Linux 4.6+)


@pytest.mark.parametrize("policy", ["rr", "shared"])
def test_a_small_answer_leaves_in_one_write(master, policy):
    # Head and body in one segment: a worker killed mid-answer never leaves a client with
    # headers and no body (workers set TCP_NODELAY, so two writes would be two segments).
    m = master("--policy", policy, workers=1)
    with socket.create_connection(("127.0.0.1", m.port), timeout=5) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := client.recv(65536):
            response += chunk
        info = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"\n")
    assert struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0] == 1
    for size in (0, 1, 64 * 1024, 64 * 1024 + 1, 300_000):  # around and past what one write gathers
        body = get(f"{m.url}/big?n={size}").content
        assert body == b"x" * size
