"""The `master.cluster` API with real processes and sockets (after Node's test-cluster-*.js)."""
import os
import subprocess

import pytest

from support import PYTHON, ROOT, alive, events, run_program, wait_for

POLICIES = ["rr", "shared", "reuseport"]


def scenario(name, *args, policy="rr", timeout=30):
    done = run_program("scenarios", name, *args, timeout=timeout, env={"CLUSTER_SCHED_POLICY": policy})
    return done, events(done.stdout)


@pytest.mark.parametrize("policy", POLICIES)
def test_event_order_states_and_first_id(policy):
    done, seen = scenario("lifecycle", policy=policy)
    assert done.returncode == 0, done.stderr
    cluster_events = [e for e in seen if "." not in e["event"] and e["event"] != "done"]
    assert [e["event"] for e in cluster_events] == ["fork", "online", "listening", "disconnect", "exit"]
    assert all(e["id"] == 1 for e in cluster_events)
    states = {e["event"]: e["state"] for e in cluster_events}
    assert states == {"fork": "none", "online": "online", "listening": "listening",
                      "disconnect": "disconnected", "exit": "dead"}
    listening = next(e for e in cluster_events if e["event"] == "listening")
    assert listening["args"][0]["port"] > 0 and listening["args"][0]["address"] == "127.0.0.1"
    exit_event = next(e for e in seen if e["event"] == "worker.exit")
    assert exit_event["args"] == [0, None] and exit_event["exited_after_disconnect"] is True
    worker_events = [e["event"] for e in seen if e["event"].startswith("worker.")]
    assert worker_events == ["worker.online", "worker.listening", "worker.disconnect", "worker.exit"]
    assert seen[-1] == {"side": "primary", "event": "done", "workers": 0}


def test_worker_exit_code_42():
    done, seen = scenario("exit42")
    assert done.returncode == 0, done.stderr
    assert seen == [{"side": "primary", "event": "exit", "code": 42, "signal": None,
                     "exited_after_disconnect": False}]


def test_sigkill_gives_signal_name_and_disconnect_before_exit():
    done, seen = scenario("sigkill")
    assert done.returncode == 0, done.stderr
    assert seen[-1]["code"] is None and seen[-1]["signal"] == "SIGKILL"
    assert seen[-1]["order"] == ["disconnect", "exit"] and seen[-1]["state"] == "dead"


def test_busy_worker_dies_on_sigterm():
    done, seen = scenario("busy_sigterm", timeout=15)
    assert done.returncode == 0, done.stderr
    assert seen == [{"side": "primary", "event": "exit", "code": None, "signal": "SIGTERM"}]


def test_messages_reach_both_handlers_in_both_directions():
    done, seen = scenario("messages")
    assert done.returncode == 0, done.stderr
    names = [(e["event"], e.get("msg")) for e in seen]
    assert ("worker.message", {"hello": 1}) in names and ("cluster.message", {"hello": 1}) in names
    assert ("worker.got", {"reply": "from primary", "to": 1}) in names
    assert ("worker.got", {"broadcast": True}) in names
    assert ("cluster.message", {"got": "broadcast"}) in names


def test_large_message_and_burst_arrive_whole_and_in_order():
    done, seen = scenario("big_and_burst", timeout=60)
    assert done.returncode == 0, done.stderr
    by_event = {e["event"]: e for e in seen}
    assert by_event["primary.received"]["big_ok"] and by_event["primary.received"]["in_order"]
    assert by_event["worker.report"]["big_ok"] and by_event["worker.report"]["in_order"]


def test_disconnect_empties_workers_and_works_twice():
    done, seen = scenario("disconnect_twice")
    assert done.returncode == 0, done.stderr
    assert [e for e in seen if e["event"] == "disconnected"] == [
        {"side": "primary", "event": "disconnected", "round": 1, "workers": 0},
        {"side": "primary", "event": "disconnected", "round": 2, "workers": 0}]


@pytest.mark.parametrize("policy", POLICIES)
def test_disconnected_worker_waits_for_an_open_connection(policy):
    done, seen = scenario("open_connection", policy=policy)
    assert done.returncode == 0, done.stderr
    before = next(e for e in seen if e["event"] == "before_close")
    assert before["dead"] is False  # 1.5 s after disconnect() it still serves the open exchange
    assert next(e for e in seen if e["event"] == "exit") == {
        "side": "primary", "event": "exit", "code": 0, "after_close": True}


def test_dropped_ipc_channel_makes_the_worker_exit():
    done, seen = scenario("ipc_drop")
    assert done.returncode == 0, done.stderr
    exit_event = seen[-1]
    assert exit_event["event"] == "exit" and exit_event["code"] == 0 and exit_event["seconds"] < 2.5


@pytest.mark.parametrize("policy", POLICIES)
def test_sigkill_of_the_primary_leaves_no_worker(policy):
    proc = subprocess.Popen([PYTHON, str(ROOT / "tests/programs/scenarios.py"), "serve_forever"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), CLUSTER_SCHED_POLICY=policy))
    try:
        pids = [int(__import__("json").loads(proc.stdout.readline())["pid"]) for _ in range(2)]
        assert all(alive(p) for p in pids)
        proc.kill()
        proc.wait(5)
        wait_for(lambda: not any(alive(p) for p in pids), timeout=2, what="workers to die with the primary")
    finally:
        proc.kill()


def test_fork_env_overrides_the_environment():
    done, seen = scenario("fork_env")
    assert done.returncode == 0, done.stderr
    env = next(e for e in seen if e["event"] == "env")
    assert env["GREETING"] == "hi" and env["NUMBER"] == "7"
    assert env["INHERITED"] == "from-primary" and env["DROPPED"] is None


def test_bad_use_gets_clear_exceptions():
    done, seen = scenario("errors")
    assert done.returncode == 0, done.stderr
    errors = next(e for e in seen if e["event"] == "errors")
    assert "unknown scheduling policy 'fastest'" in errors["policy"]
    assert "frozen" in errors["frozen"]
    assert "not JSON-serialisable" in errors["not_json"]
    assert "not JSON-serialisable" in errors["worker_not_json"]
    assert "only be called in the primary" in errors["fork_in_worker"]
    assert "closed" in errors["dead"]


@pytest.mark.parametrize("policy", POLICIES)
def test_address_in_use_is_reported_on_worker_and_primary(policy):
    done, seen = scenario("eaddrinuse", policy=policy)
    assert done.returncode == 0, done.stderr
    error = next(e for e in seen if e["event"] == "listen_error")
    assert "address already in use" in error["error"] and error["errno"] == 98
    assert next(e for e in seen if e["event"] == "exit")["code"] == 7
    assert "address already in use" in done.stderr  # the primary says so too
