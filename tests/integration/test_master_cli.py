"""`python -m master`: the real CLI on a free port, real workers, real signals."""
import os
import signal
import subprocess
import threading
import time

import pytest

from support import PYTHON, ROOT, Master, alive, cpu_seconds, get, wait_for, worker_pid




def test_n_distinct_pids_serve(master):
    m = master(workers=2)
    pids = {worker_pid(m.port) for _ in range(20)}
    assert len(pids) == 2
    assert pids == set(m.workers())
    log = m.log()
    assert f"Master {m.pid} is running" in log
    assert "Forking 2 workers..." in log
    for pid in pids:
        assert f"Worker {pid} is online" in log


def test_sigkilled_worker_is_replaced_and_serving_within_2s(master):
    m = master(workers=2)
    victim = m.workers()[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    def replaced_and_serving():
        pids = set(m.listening_workers())
        return len(pids) == 2 and victim not in pids and pids
    pids = wait_for(replaced_and_serving, timeout=2.0, what="a replacement worker listening")
    new = (pids - {victim}).pop()
    wait_for(lambda: any(worker_pid(m.port) == new for _ in range(4)), timeout=2.0 - (time.monotonic() - killed_at) + 0.5)
    assert f"Worker {victim} died (SIGKILL). Starting new worker..." in m.log()


def test_crash_loop_backs_off_and_stays_cheap(master):
    m = master(app="apps.crashing:app", workers=1, ready=False)
    cpu_before = cpu_seconds(m.pid)
    wait_for(lambda: m.log().count("died (exit code 3)") >= 6, timeout=15, what="six crashes")
    log = m.log()
    delays = [float(line.split("Starting new worker in ")[1].split(" s")[0])
              for line in log.splitlines() if "Starting new worker in " in line]
    assert "Worker" in log and "Starting new worker..." in log  # the first crash restarts at once
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]  # then backs off, doubling
    assert m.proc.poll() is None  # a crash loop is not a reason to halt
    assert cpu_seconds(m.pid) - cpu_before < 1.0  # the master does not burn a core


def test_unimportable_app_halts_with_status_and_message(master):
    m = master(app="apps.broken:app", workers=2, ready=False)
    assert m.wait_exit(15) == 4
    log = m.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log  # one line says why, however many workers failed
    assert "cannot load app 'apps.broken:app': ModuleNotFoundError" in errors[0] and "halting" in errors[0]
    assert "[worker" not in log
    assert "Traceback" not in log
    assert log.count("died") == 0  # no respawn loop


def test_invalid_flags_give_one_line_and_nonzero_status():
    for args in (["apps.hello:app", "--workers", "0"], ["apps.hello:app", "--workers", "many"],
                 ["apps.hello:app", "--bind", "nowhere"], ["apps.hello:app", "--policy", "fastest"],
                 ["apps.hello:app", "--graceful-timeout", "-1"], ["not a module"], []):
        out = subprocess.run([PYTHON, "-m", "master", *args], capture_output=True, text=True, cwd=ROOT, timeout=10)
        assert out.returncode == 2, (args, out)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr
        assert out.stderr.startswith("pycluster: error:")


def test_port_in_use_is_a_clear_error(master, tmp_path):
    first = master(workers=1)
    second = Master(tmp_path, "apps.hello:app", 1, port=first.port).start()
    try:
        assert second.wait_exit(10) == 3
        assert f"cannot listen on 127.0.0.1:{first.port}: address already in use" in second.log()
        assert "Traceback" not in second.log()
    finally:
        second.kill_all()


def test_sigterm_lets_a_slow_request_finish_and_exits_0(master):
    m = master("--graceful-timeout", "5", workers=2)
    result = {}

    def slow():
        result["response"] = get(f"{m.url}/sleep?s=1.5", timeout=10)
    client = threading.Thread(target=slow)
    client.start()
    wait_for(lambda: any(w["in_flight"] for w in m.status()["workers"]), timeout=5, what="the request in flight")
    sent = time.monotonic()
    m.signal(signal.SIGTERM)
    assert m.wait_exit(8) == 0
    client.join(5)
    assert result["response"].status_code == 200
    assert time.monotonic() - sent < 5  # well within the deadline: it waited for the request only
    with pytest.raises(Exception):
        get(m.url, timeout=1)


def test_graceful_timeout_kills_what_does_not_finish(master):
    m = master("--graceful-timeout", "1", workers=1)
    threading.Thread(target=lambda: _swallow(lambda: get(f"{m.url}/sleep?s=30", timeout=40)), daemon=True).start()
    wait_for(lambda: any(w["in_flight"] for w in m.status()["workers"]), timeout=5)
    sent = time.monotonic()
    m.signal(signal.SIGTERM)
    assert m.wait_exit(6) == 0
    assert 0.9 < time.monotonic() - sent < 4
    assert "SIGKILL" in m.log()


def test_second_signal_exits_at_once(master):
    m = master("--graceful-timeout", "30", workers=2)
    threading.Thread(target=lambda: _swallow(lambda: get(f"{m.url}/sleep?s=30", timeout=40)), daemon=True).start()
    wait_for(lambda: any(w["in_flight"] for w in m.status()["workers"]), timeout=5)
    workers = m.workers()
    m.signal(signal.SIGTERM)
    wait_for(lambda: "Shutting down" in m.log(), timeout=5)
    sent = time.monotonic()
    m.signal(signal.SIGINT)
    m.wait_exit(3)
    assert time.monotonic() - sent < 2
    wait_for(lambda: not any(alive(p) for p in workers), timeout=2, what="workers gone")


def test_sigkill_of_the_master_leaves_no_worker(master):
    m = master(workers=2)
    workers = m.workers()
    assert len(workers) == 2
    m.signal(signal.SIGKILL)
    m.wait_exit(5)
    wait_for(lambda: not any(alive(p) for p in workers), timeout=2, what="every worker gone within 2 s")


def test_master_never_imports_the_app(master):
    m = master(app="apps.hello:app", workers=1)
    assert worker_pid(m.port) != m.pid
    # Everything the master process imports, loaded the way it loads it: no app, no Flask.
    modules = subprocess.run(
        [PYTHON, "-c", "import sys, master.__main__, master.arbiter; print(sorted(sys.modules))"],
        capture_output=True, text=True, cwd=ROOT, timeout=10)
    assert "'apps" not in modules.stdout and "'app'" not in modules.stdout and "flask" not in modules.stdout


def _swallow(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the request is meant to be cut off
        pass


def scheduling_class(pid: int) -> int:
    return os.sched_getscheduler(pid)


def test_master_runs_as_sched_batch_and_its_workers_do_not(master):
    m = master(workers=2)
    assert scheduling_class(m.pid) == os.SCHED_BATCH
    assert "Master runs as SCHED_BATCH" in m.log()
    first = m.workers()
    assert [scheduling_class(pid) for pid in first] == [os.SCHED_OTHER] * 2
    # A replacement is forked later, from the batch-class master: it too goes back.
    os.kill(first[0], signal.SIGKILL)
    replacement = wait_for(lambda: (set(m.listening_workers()) - set(first)) or None, timeout=10,
                           what="a replacement worker").pop()
    assert scheduling_class(replacement) == os.SCHED_OTHER


def test_batch_scheduling_off_leaves_the_master_alone(master):
    m = master("--batch-scheduling", "0", workers=1)
    assert scheduling_class(m.pid) == os.SCHED_OTHER
    assert "SCHED_BATCH" not in m.log()


def test_a_class_chosen_by_whoever_started_the_master_is_kept(tmp_path):
    # Started as SCHED_IDLE (say by `chrt -i 0`): the master keeps it, and so do its workers.
    m = Master(tmp_path, "apps.hello:app", 1)
    m.argv = [PYTHON, "-c", "import os, sys; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0)); "
              "os.execv(sys.executable, sys.argv[1:])", *m.argv]
    try:
        m.start().wait_ready(1)
        assert scheduling_class(m.pid) == os.SCHED_IDLE
        assert [scheduling_class(pid) for pid in m.workers()] == [os.SCHED_IDLE]
        assert "stays in CPU scheduling class" in m.log()
    finally:
        m.kill_all()
