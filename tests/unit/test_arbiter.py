"""The supervisor without processes: an Arbiter over a Primary whose process starter, clock and
signal table are fakes, driven through crash, backoff, halt, reload, scale and stop.

The Primary and its Worker records are the real ones, talking over real socketpairs: each
fake "process" keeps the worker's end of its channel, so a test speaks for the worker by
writing the frames a real one would (online, listening, heartbeat, bootError), and ends it
by giving it a return code, as a real exit would.
"""
from __future__ import annotations

import json
import os
import signal
import socket

import pytest

from master.core import ipc
from master.core.exitcodes import MASTER_APP_LOAD_ERROR, WORKER_APP_LOAD_ERROR
from master.core.loop import EventLoop
from master.primary.primary import Primary
from master.supervisor.arbiter import Arbiter
from master.supervisor.config import Config


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SignalTableLoop(EventLoop):
    """The real loop, but signal handlers go into a table instead of the process's."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.handlers: dict[int, object] = {}

    def add_signal_handler(self, signum, fn):
        self.handlers[signum] = fn

    def remove_signal_handler(self, signum):
        self.handlers.pop(signum, None)


class FakeProcess:
    """What Popen gives the Primary: a pid, poll(), send_signal(); plus the worker's channel end."""

    next_pid = 900000

    def __init__(self, argv, env, pass_fds, close_fds):
        FakeProcess.next_pid += 1
        self.pid = FakeProcess.next_pid
        self.env = env
        self.returncode = None
        self.signals: list[int] = []
        self.channel = socket.socket(fileno=os.dup(pass_fds[0]))
        self.channel.setblocking(False)
        started.append(self)

    def poll(self):
        return self.returncode

    def send_signal(self, sig):
        self.signals.append(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.returncode = -sig

    def say(self, act, **fields):
        self.channel.sendall(ipc.encode(ipc.internal(act, **fields)))

    def exit(self, returncode):
        self.returncode = returncode
        self.channel.close()


started: list[FakeProcess] = []


class Cluster:
    """An arbiter on a fake clock; `turn()` runs the loop until nothing more is due now."""

    def __init__(self, **config) -> None:
        started.clear()
        self.clock = FakeClock()
        self.loop = SignalTableLoop(self.clock)
        self.primary = Primary(loop=self.loop, popen=FakeProcess)
        defaults = dict(app_module="apps.hello:app", workers=2, bind="127.0.0.1:0", policy="shared",
                        batch_scheduling=False, worker_timeout=30.0)
        self.arbiter = Arbiter(Config(**{**defaults, **config}), primary=self.primary)
        assert self.arbiter.start()

    def turn(self, advance: float = 0.0) -> None:
        self.clock.now += advance
        for _ in range(20):
            self.loop.run_once(max_wait=0)
        self.primary.reap_workers()
        for _ in range(5):
            self.loop.run_once(max_wait=0)

    def listen(self, process: FakeProcess) -> None:
        process.say("online")
        process.say("listening", address="127.0.0.1", port=self.arbiter.handle.port)
        self.turn()

    def live(self) -> list[FakeProcess]:
        return [p for p in started if p.returncode is None]

    def close(self) -> None:
        for process in started:
            process.channel.close()
        self.primary.close_handles()
        self.loop.close()


@pytest.fixture
def cluster():
    made: list[Cluster] = []

    def make(**config) -> Cluster:
        made.append(Cluster(**config))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_starts_the_target_and_tells_workers_how_to_serve(cluster):
    c = cluster(workers=3, access_log=True)
    assert len(started) == 3
    settings = json.loads(started[0].env["PYCLUSTER_WORKER_SETTINGS"])
    assert settings["access_log"] is True
    assert settings["heartbeat_interval"] == 1.0
    assert started[0].env["PYCLUSTER_APP"] == "apps.hello:app"
    assert sorted(w.slot for w in c.primary.workers.values()) == [0, 1, 2]


def test_a_crash_is_replaced_at_once_then_with_backoff(cluster):
    c = cluster(workers=1)
    first = started[0]
    c.listen(first)
    first.exit(-signal.SIGKILL)
    c.turn()
    assert len(started) == 2  # the first crash: a new worker at once
    assert c.arbiter.restarts["crash"] == 1
    second = started[1]
    second.exit(1)  # crashes again after no time at all
    c.turn()
    assert len(started) == 2  # backoff: not yet
    c.turn(advance=0.05)
    assert len(started) == 2
    c.turn(advance=0.06)  # 0.1 s after the second crash
    assert len(started) == 3
    assert c.arbiter.slot_restarts[0] == 2
    assert [e["verdict"] for e in c.arbiter.events] == ["respawn", "respawn"]


def test_a_worker_that_stayed_up_earns_a_fresh_start(cluster):
    c = cluster(workers=1)
    c.listen(started[0])
    started[0].exit(1)
    c.turn()
    c.listen(started[1])
    c.turn(advance=31)  # up longer than the backoff's reset_after
    started[1].exit(1)
    c.turn()
    assert len(started) == 3  # respawned at once again


def test_a_worker_killed_after_serving_a_while_is_replaced_at_once_every_time(cluster):
    c = cluster(workers=1)
    for n in range(5):
        c.listen(started[n])
        c.turn(advance=1.5)  # served for longer than the backoff's stable_after
        started[n].exit(-signal.SIGKILL)
        c.turn()
        assert len(started) == n + 2  # no crash loop backoff: a new worker at once
    assert c.arbiter.restarts["crash"] == 5


def test_an_app_that_cannot_load_halts_with_status_4_and_no_respawn(cluster):
    c = cluster(workers=2)
    for process in started:
        process.say("bootError", error="cannot load app 'apps.hello:app': ImportError: nope")
        process.exit(WORKER_APP_LOAD_ERROR)
    c.turn()
    assert c.arbiter.exit_code == MASTER_APP_LOAD_ERROR
    assert c.arbiter.state == "stopped"
    assert len(started) == 2


def test_a_later_load_failure_leaves_only_its_slot_empty(cluster):
    c = cluster(workers=2)
    c.listen(started[0])
    started[1].exit(WORKER_APP_LOAD_ERROR)
    c.turn()
    assert c.arbiter.state == "running" and len(started) == 2


def test_the_watchdog_kills_a_silent_worker_and_it_is_replaced_as_a_timeout(cluster):
    c = cluster(workers=1, worker_timeout=2.0)
    process = started[0]
    c.listen(process)
    c.turn(advance=0.5)
    process.say("heartbeat", requests=0)
    c.turn()
    c.turn(advance=1.9)
    assert signal.SIGUSR1 not in process.signals  # heard from 1.9 s ago: fine
    c.turn(advance=0.6)  # 2.5 s of silence
    assert process.signals[:2] == [signal.SIGUSR1, signal.SIGCONT]
    c.turn(advance=0.6)  # the stack dump window has passed
    assert signal.SIGKILL in process.signals
    c.turn()
    assert c.arbiter.restarts["timeout"] == 1 and len(started) == 2


def test_scale_up_and_down_drains_the_oldest(cluster):
    c = cluster(workers=2)
    for process in started:
        c.listen(process)
    assert c.arbiter.command("scale", workers=3)["ok"]
    assert len(started) == 3
    assert c.arbiter.command("scale", workers=1) == {"ok": True, "workers": 1}
    c.turn()
    oldest = [c.primary.workers[1], c.primary.workers[2]]
    assert all(w.retire_reason == "scale-down" for w in oldest)
    assert not c.primary.workers[3].retire_reason
    assert c.arbiter.command("scale", workers=0)["ok"] is False


def test_a_signal_runs_the_same_command(cluster):
    c = cluster(workers=1)
    c.listen(started[0])
    c.loop.handlers[signal.SIGTTIN](signal.SIGTTIN)
    c.turn()
    assert c.arbiter.target == 2 and len(started) == 2


def test_a_rolling_restart_replaces_each_worker_after_its_successor_listens(cluster):
    c = cluster(workers=2)
    for process in started:
        c.listen(process)
    assert c.arbiter.command("reload") == {"ok": True, "replacing": 2}
    c.turn()
    assert len(started) == 3  # one at a time
    c.listen(started[2])
    old = c.primary.workers[1]
    assert old.retire_reason == "reload"  # drained once its successor listens
    started[0].exit(0)
    c.turn()
    assert len(started) == 4  # the next step
    c.listen(started[3])
    started[1].exit(0)
    c.turn()
    assert c.arbiter.rolling.status["state"] == "done" and c.arbiter.rolling.status["replaced"] == 2
    assert sorted(w.generation for w in c.primary.workers.values()) == [1, 1]


def test_a_successor_that_cannot_boot_stops_the_reload_and_keeps_the_old_worker(cluster):
    c = cluster(workers=1)
    c.listen(started[0])
    c.arbiter.command("reload")
    c.turn()
    started[1].say("bootError", error="cannot load app: SyntaxError")
    started[1].exit(WORKER_APP_LOAD_ERROR)
    c.turn()
    status = c.arbiter.rolling.status
    assert status["state"] == "failed" and "SyntaxError" in status["error"]
    assert c.arbiter.state == "running" and c.primary.workers[1].replaced_by is None
    assert started[0].returncode is None


def test_stop_drains_then_kills_what_is_left_after_the_timeout(cluster):
    c = cluster(workers=2, graceful_timeout=5.0)
    for process in started:
        c.listen(process)
    c.loop.handlers[signal.SIGTERM](signal.SIGTERM)
    c.turn()
    assert c.arbiter.state == "stopping"
    started[0].exit(0)
    c.turn()
    c.turn(advance=5.1)
    assert signal.SIGKILL in started[1].signals
    c.turn()
    assert c.arbiter.state == "stopped"


@pytest.mark.parametrize("args, error", [
    ({"workers": float("inf")}, "whole number"),
    ({"workers": 10 ** 6}, "between 1 and 1024"),
    ({"workers": True}, "whole number"),
    ({"delta": "1"}, "whole number"),
    ({}, "exactly one"),
    ({"workers": 2, "evil": 1}, "no argument"),
])
def test_bad_command_arguments_are_error_replies(cluster, args, error):
    c = cluster(workers=1)
    reply = c.arbiter.command("scale", **args)
    assert reply["ok"] is False and error in reply["error"]
    assert c.arbiter.state == "running"


def test_a_command_that_raises_is_an_error_reply_and_the_loop_goes_on(cluster, monkeypatch):
    c = cluster(workers=1)

    def broken(message=None):
        raise RecursionError("deep")

    monkeypatch.setattr(c.arbiter, "command_broadcast", broken)
    reply = c.arbiter.command("broadcast", message=1)
    assert reply == {"ok": False, "error": "broadcast failed: RecursionError: deep"}
    assert c.arbiter.command("status")["ok"]
