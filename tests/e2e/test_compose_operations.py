"""Operations demos through compose: rolling restart under load and the control socket.

These need the operations issue (SIGUSR2 rolling restart, `python -m master ctl`); they share
the session's stack with test_compose_demos.py and leave it healthy. The rolling restart signals
every replica's master at once (`docker compose kill -s USR2 app`); HAProxy keeps sending to both.
"""

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_rolling_restart_under_load_fails_nothing(stack):
    """docker compose kill -s USR2 app under Locust load: every worker replaced, 0 failures."""
    before = stack.processes()
    assert before["workers"], before
    run = stack.background_locust(seconds=20, users=10, env={"LOCUST_MAX_P95_MS": "5000"})
    run.wait_spawned()
    stack.compose("kill", "-s", "USR2", "app")
    after = stack.wait_workers(
        lambda p: p["workers"] and not set(p["workers"]) & set(before["workers"])
        and len(p["workers"]) == len(before["workers"]),
        deadline_s=40, what="every worker replaced by the rolling restart")
    code, stats, stderr = run.result()
    requests, failures = stack.totals(stats)
    assert after["master"] == before["master"], "the master must survive a rolling restart"
    assert code == 0 and requests > 0 and failures == 0, (code, requests, failures, stderr[-3000:])
    assert stack.health("app") in ("healthy", "starting")


def test_ctl_status_works_as_the_non_root_user(stack):
    """`ctl status --json` in each replica (`docker compose exec --index N app ...`) matches its processes."""
    for index in range(1, len(stack.running("app")) + 1):
        done = stack.exec_app("python", "-m", "master", "ctl", "status", "--json", check=False, index=index)
        assert done.returncode == 0, done.stdout + done.stderr
        status = json.loads(done.stdout)
        procs = stack.processes(index)
        assert sorted(w["pid"] for w in status["workers"]) == procs["workers"], (status, procs)
        # The table form too: one line per worker at least.
        table = stack.exec_app("python", "-m", "master", "ctl", "status", index=index)
        for pid in procs["workers"]:
            assert str(pid) in table.stdout, table.stdout


def test_ctl_kill_worker_is_replaced(stack):
    """`ctl kill-worker ID` SIGKILLs that worker; the master forks a replacement that serves."""
    status = json.loads(stack.exec_app("python", "-m", "master", "ctl", "status", "--json").stdout)
    target = status["workers"][0]
    done = stack.exec_app("python", "-m", "master", "ctl", "kill-worker", str(target["id"]), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    before = {w["pid"] for w in status["workers"]}
    stack.wait_workers(
        lambda p: target["pid"] not in p["workers"] and len(p["workers"]) == len(before),
        deadline_s=10, what="a replacement for the killed worker")
    stack.wait_http("/", 200, deadline_s=10)
