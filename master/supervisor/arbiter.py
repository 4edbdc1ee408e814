"""The production master: keeps N workers serving, restarts, reloads, drains, and stops.

Built on the cluster API (master/primary). Signals and control-socket commands both end in
command(), run by the loop (DESIGN.md style 3: handlers only enqueue). The loop reconciles
the wanted worker count with the real one in manage_workers(); what an exit means is decided
by lifecycle.classify_exit(), and the arbiter only acts on the verdict.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time
from collections import Counter, deque
from typing import Any, Callable

from ..core import board as fields
from ..core import cpu_class
from ..core.exitcodes import MASTER_APP_LOAD_ERROR, MASTER_CANNOT_LISTEN, MASTER_OK
from ..core.net import ListenError, parse_bind
from ..core.procstats import cpu_seconds, rss_bytes
from ..primary.primary import Primary
from ..primary.template import TemplateStarter
from ..primary.worker import LISTENING, Worker, signal_number
from . import lifecycle
from .backoff import Backoff
from .commands import CommandError, validate
from .config import Config
from .rolling import RollingRestart
from .templates import TemplateKeeper
from .watchdog import Watchdog

log = logging.getLogger("master.arbiter")

SIGNAL_COMMANDS = {
    signal.SIGTERM: ("stop", {}),
    signal.SIGINT: ("stop", {}),
    signal.SIGQUIT: ("stop", {"graceful": False}),
    signal.SIGHUP: ("reload", {}),
    signal.SIGUSR2: ("reload", {}),
    signal.SIGTTIN: ("scale", {"delta": 1}),
    signal.SIGTTOU: ("scale", {"delta": -1}),
}


class StartupRefused(Exception):
    """Raised by a start-up hook that makes running unsafe; the master exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Arbiter:
    """Supervises the workers of one app on one address.

    `primary` is the cluster API's Primary (or a stand-in with its interface: loop,
    workers, fork, listen, on, broadcast, setup_primary, close_handles); the clock is the
    primary's loop clock, so unit tests drive both.
    """

    def __init__(self, config: Config, *, primary: Any = None, env: dict[str, str] | None = None) -> None:
        self.cfg = config
        starter = TemplateStarter() if config.fork_template and primary is None else None
        self.primary = primary or Primary(popen=starter or subprocess.Popen)
        self.templates = TemplateKeeper(self.primary, starter) if starter else None
        self.loop = self.primary.loop
        self.env = {**(env or {}), **config.worker_settings().to_env()}
        self.target = config.workers
        self.generation = 0
        self.state = "starting"  # starting -> running -> stopping -> stopped
        self.exit_code = MASTER_OK
        self.started_at = time.time()
        self.ever_listening = False
        self.backoffs: dict[int, Backoff] = {}
        self.spawn_timers: dict[int, Any] = {}
        self.restarts: Counter[str] = Counter()
        self.slot_restarts: Counter[int] = Counter()
        self.retired_requests = 0  # requests served by workers that are gone (counters never go back)
        self.rolling = RollingRestart(self)
        self.watchdog = Watchdog(self, config.worker_timeout, config.heartbeat_interval)
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.handle: Any = None
        self.stop_timer: Any = None
        self.stop_count = 0
        self._startups: list[Callable[[], None]] = []

    # -- start --------------------------------------------------------------------------
    def run(self) -> int:
        """Start, supervise until stopped, clean up; returns the exit status."""
        log.info("Master %s is running", os.getpid())
        if not self.start():
            return self.exit_code
        try:
            self.loop.run(until=self._finished)
        finally:
            self.primary.close_handles()
        log.info("Master %s exiting (status %d)", os.getpid(), self.exit_code)
        return self.exit_code

    def start(self) -> bool:
        """Listen, hook events and signals, fork the workers; False (exit_code set) if it cannot listen."""
        if self.cfg.batch_scheduling:
            child_env, account = cpu_class.use_batch()
            self.env.update(child_env)
            log.info("Master %s", account)
        self.primary.setup_primary(app=self.cfg.app_module, bind=self.cfg.bind, env=self.env)
        self.primary.scheduling_policy = self.cfg.policy
        try:
            self.handle = self.primary.listen(self.cfg.bind, backlog=self.cfg.backlog)
            self.handle.retry_idempotent = self.cfg.retry_idempotent  # rr reads these; others ignore them
            self.handle.keepalive_timeout = self.cfg.keepalive_timeout
            self.handle.keepalive_pool = self.cfg.keepalive_pool and self.cfg.engine == "httptools"
            self.handle.expect(self.target)
        except ListenError as exc:
            log.error("%s", exc.strerror)
            self.exit_code = MASTER_CANNOT_LISTEN
            return False
        log.info("Listening at http://%s:%s (policy %s)", parse_bind(self.cfg.bind)[0], self.handle.port,
                 self.cfg.policy)
        for event, handler in (("online", self._on_online), ("listening", self._on_listening),
                               ("exit", self._on_exit), ("heartbeat", self._on_heartbeat)):
            self.primary.on(event, handler)
        for signum, (name, kwargs) in SIGNAL_COMMANDS.items():
            self.loop.add_signal_handler(signum, lambda _s, n=name, k=kwargs: self.command(n, **k))
        for startup in self._startups:
            try:
                startup()
            except StartupRefused as exc:
                log.error("%s: not starting", exc)
                self.exit_code = exc.exit_code
                self.primary.close_handles()
                return False
        self.state = "running"
        if self.templates is not None:
            self.templates.start(self._first_generation_loaded)
        else:
            self._first_generation_loaded(None)
        self.watchdog.start()
        return True

    def _first_generation_loaded(self, error: str | None) -> None:
        """The fork template has loaded the app (or there is none): fork the workers; halt if it cannot."""
        if error:
            log.error("%s: halting", error)
            self.exit_code = MASTER_APP_LOAD_ERROR
            self.stop_now()
            return
        log.info("Forking %d workers...", self.target)
        self.manage_workers()

    def add_startup(self, start: Callable[[], None]) -> None:
        """Run `start()` once the listener is open (control socket, metrics); it may raise StartupRefused."""
        self._startups.append(start)

    def _finished(self) -> bool:
        return self.state == "stopped"

    # -- the command path shared by signals and the control socket -----------------------
    def command(self, name: str, /, **kwargs: Any) -> dict[str, Any]:
        """Validate and run one command; returns a JSON-able result ({"ok": bool, ...}).

        Nothing a client sends can stop the master: a bad argument is an error reply, and
        a handler that raises anything is logged once and becomes an error reply too.
        """
        try:
            args = validate(name, kwargs)
            return getattr(self, f"command_{name.replace('-', '_')}")(**args)
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the command boundary: the loop must go on
            log.exception("command %r failed", name)
            return {"ok": False, "error": f"{name} failed: {type(exc).__name__}: {exc}"}

    def command_status(self) -> dict[str, Any]:
        """The master and every worker, as `ctl status` shows them."""
        return {"ok": True, **self.snapshot()}

    def command_stop(self, graceful: bool = True) -> dict[str, Any]:
        """Graceful stop; a second stop (or graceful=False) kills the workers now."""
        self.stop_count += 1
        if not graceful or self.stop_count > 1:
            self.stop_now()
        else:
            self.stop_gracefully()
        return {"ok": True}

    def command_reload(self) -> dict[str, Any]:
        """Replace every worker, one at a time, with no request dropped."""
        if self.state != "running":
            return {"ok": False, "error": f"cannot reload while {self.state}"}
        if self.rolling.running:
            return {"ok": False, "error": "a rolling restart is already running"}
        self.generation += 1
        workers = self.serving_workers()
        self.rolling.status = {"state": "running", "generation": self.generation, "total": len(workers),
                               "replaced": 0, "started": time.time(), "phase": "loading the new code"}
        if self.templates is None:
            self.rolling.start(workers, self.generation)
        else:
            self.templates.renew(lambda error: self._new_code_loaded(error, workers))
        return {"ok": True, "replacing": len(workers)}

    def _new_code_loaded(self, error: str | None, workers: list[Worker]) -> None:
        if error:
            log.error("New code cannot be loaded (%s): rolling restart stopped, the workers keep serving", error)
            self.rolling.failed(error)
        elif self.state == "running":
            self.rolling.start([w for w in workers if not w.is_dead()], self.generation)

    def command_scale(self, workers: int | None = None, delta: int | None = None) -> dict[str, Any]:
        """Set the worker count (or change it by `delta`); scaling down drains the oldest."""
        target = workers if workers is not None else self.target + (delta or 0)
        if target < 1:
            return {"ok": False, "error": f"cannot scale to {target}: need at least 1 worker"}
        if self.state != "running":
            return {"ok": False, "error": f"cannot scale while {self.state}"}
        log.info("Scaling from %d to %d workers", self.target, target)
        self.target = target
        self.manage_workers()
        return {"ok": True, "workers": target}

    def command_kill_worker(self, id: int, signal_name: str = "SIGKILL") -> dict[str, Any]:  # noqa: A002
        """Send a signal to one worker (default SIGKILL: a crash, so it is replaced)."""
        worker = self.primary.workers.get(id)
        if worker is None or worker.is_dead():
            return {"ok": False, "error": f"no live worker with id {id}"}
        worker.signal(signal_number(signal_name))
        return {"ok": True, "pid": worker.pid}

    def command_broadcast(self, message: Any = None) -> dict[str, Any]:
        """Send a user message to every worker."""
        return {"ok": True, "sent": self.primary.broadcast(message)}

    # -- reconciling --------------------------------------------------------------------
    def serving_workers(self) -> list[Worker]:
        """Live workers that are not on their way out."""
        return [w for w in self.primary.workers.values()
                if not w.exited_after_disconnect and not w.is_dead() and not w.replaced_by]

    def manage_workers(self) -> None:
        """Drain the oldest workers above the target; spawn into empty slots below it."""
        if self.state != "running":
            return
        for slot in [s for s in self.spawn_timers if s >= self.target]:
            self.spawn_timers.pop(slot).cancel()
        serving = sorted(self.serving_workers(), key=lambda w: w.started_monotonic)
        excess = len(serving) + len(self.spawn_timers) - self.target
        if excess > 0:
            for worker in serving[:excess]:
                self.retire_worker(worker, "scale-down")
            serving = serving[excess:]
        taken = {w.slot for w in serving if w.slot < self.target} | set(self.spawn_timers)
        free = [slot for slot in range(self.target) if slot not in taken]
        for worker in serving:
            if worker.slot >= self.target:  # a survivor of a scale-down keeps serving, renumbered
                worker.slot = free.pop(0)
        for slot in free:
            self.spawn_worker(slot)

    def spawn_worker(self, slot: int, generation: int | None = None) -> Worker:
        """Fork one worker into `slot`."""
        self.spawn_timers.pop(slot, None)
        worker = self.primary.fork()
        worker.slot = slot
        worker.generation = self.generation if generation is None else generation
        if self.cfg.max_requests:
            worker.request_limit = self.cfg.max_requests + random.randint(0, self.cfg.max_requests_jitter)
        return worker

    def retire_worker(self, worker: Worker, reason: str) -> None:
        """Drain `worker` (no new connections, finish open ones); SIGKILL after the timeout."""
        if worker.is_dead() or worker.retire_reason:
            return
        worker.retire_reason = reason
        self.restarts[reason] += 1
        worker.disconnect()
        deadline = self.cfg.graceful_timeout

        def force() -> None:
            if not worker.is_dead():
                log.warning("Worker %s did not drain in %.1f s: SIGKILL", worker.pid, deadline)
                worker.kill("SIGKILL")

        self.loop.call_later(deadline, force)

    def replace_worker(self, worker: Worker, reason: str) -> Worker | None:
        """Spawn a successor in the same slot; retire `worker` once the successor listens."""
        if worker.is_dead() or worker.retire_reason or worker.replaced_by:
            return None
        successor = self.spawn_worker(worker.slot)
        worker.replaced_by = successor
        successor.replaces = worker
        successor.replace_reason = reason
        return successor

    # -- events -------------------------------------------------------------------------
    def _on_online(self, worker: Worker) -> None:
        log.info("Worker %s is online", worker.pid)

    def _on_listening(self, worker: Worker, _address: dict[str, Any]) -> None:
        log.info("Worker %s is listening (%.2f s after it was started)", worker.pid,
                 self.loop.clock() - worker.started_monotonic)
        self.ever_listening = True
        previous = worker.replaces
        if previous is not None and not previous.is_dead():
            log.info("Worker %s is listening; draining worker %s (%s)", worker.pid, previous.pid,
                     worker.replace_reason)
            self.retire_worker(previous, worker.replace_reason or "replace")
            if worker.replace_reason == "reload":
                previous.once("exit", lambda *_: self.rolling.step_done())

    def _on_heartbeat(self, worker: Worker) -> None:
        if worker.state != LISTENING or worker.retire_reason or worker.replaced_by:
            return
        requests = int(worker.stats.get("requests", 0))
        if worker.request_limit and requests >= worker.request_limit:
            log.info("Worker %s served %d requests (limit %d): recycling", worker.pid, requests, worker.request_limit)
            self.replace_worker(worker, "max-requests")
        elif self.cfg.max_memory and int(worker.stats.get("rss", 0)) > self.cfg.max_memory:
            log.info("Worker %s uses %d bytes (limit %d): recycling", worker.pid, worker.stats["rss"],
                     self.cfg.max_memory)
            self.replace_worker(worker, "max-memory")

    def _on_exit(self, worker: Worker, code: int | None, signame: str | None) -> None:
        self.retired_requests += served(worker)
        verdict, reason = lifecycle.classify_exit(self.exit_facts(worker, code, signame))
        self.events.append({"ts": time.time(), "worker": worker.id, "pid": worker.pid,
                            "exit": lifecycle.describe_exit(code, signame), "verdict": verdict,
                            "reason": worker.retire_reason or worker.kill_reason or reason})
        self._exit_actions[verdict](self, worker, lifecycle.describe_exit(code, signame), reason)

    def exit_facts(self, worker: Worker, code: int | None, signame: str | None) -> lifecycle.ExitFacts:
        """What classify_exit() needs to know about this exit."""
        successor = worker.replaced_by
        return lifecycle.ExitFacts(
            code=code, signame=signame, supervisor_stopping=self.state in ("stopping", "stopped"),
            retired=bool(worker.exited_after_disconnect and worker.retire_reason),
            was_successor=worker.replaces is not None, ever_listened=worker.ever_listened,
            successor_alive=successor is not None and not successor.is_dead(),
            cluster_ever_listened=self.ever_listening, kill_reason=worker.kill_reason)

    # -- what each verdict does ------------------------------------------------------------
    def _exited_while_stopping(self, worker: Worker, how: str, _reason: str) -> None:
        log.info("Worker %s exited (%s)", worker.pid, how)
        if not self.primary.workers:
            self._stopped()

    def _exited_drained(self, worker: Worker, _how: str, _reason: str) -> None:
        log.info("Worker %s exited after draining (%s)", worker.pid, worker.retire_reason)
        self.manage_workers()

    def _successor_failed(self, worker: Worker, how: str, _reason: str) -> None:
        predecessor = worker.replaces
        predecessor.replaced_by = None
        why = f"new worker {worker.pid} exited ({how}) before listening" + (
            f": {worker.boot_error}" if worker.boot_error else "")
        what = "rolling restart" if worker.replace_reason == "reload" else worker.replace_reason
        log.error("%s; %s stopped, worker %s keeps serving", why[0].upper() + why[1:], what, predecessor.pid)
        if worker.replace_reason == "reload":
            self.rolling.failed(why)

    def _app_load_halt(self, worker: Worker, _how: str, _reason: str) -> None:
        log.error("%s: halting", worker.boot_error or f"cannot load app {self.cfg.app_module!r}")
        self.exit_code = MASTER_APP_LOAD_ERROR
        self.stop_now()

    def _app_load_slot_down(self, worker: Worker, _how: str, _reason: str) -> None:
        log.error("Worker %s %s: not respawning slot %d (fix the app, then reload)", worker.pid,
                  worker.boot_error or f"cannot load app {self.cfg.app_module!r}", worker.slot)

    def _listen_halt(self, worker: Worker, _how: str, _reason: str) -> None:
        log.error("Worker %s cannot listen: halting", worker.pid)
        self.exit_code = MASTER_CANNOT_LISTEN
        self.stop_now()

    def _successor_takes_over(self, worker: Worker, how: str, _reason: str) -> None:
        worker.replaced_by.replaces = None  # it crashed while its successor was booting
        log.info("Worker %s died (%s); its successor %s takes over", worker.pid, how, worker.replaced_by.pid)

    def _respawn_after_crash(self, worker: Worker, how: str, reason: str) -> None:
        self.restarts[reason] += 1
        self.slot_restarts[worker.slot] += 1
        uptime = self.loop.clock() - worker.started_monotonic
        delay = self.backoffs.setdefault(worker.slot, Backoff()).next_delay(uptime, worker.ever_listened)
        if delay:
            log.warning("Worker %s died (%s). Starting new worker in %.1f s (crash loop backoff)...",
                        worker.pid, how, delay)
            self.spawn_timers[worker.slot] = self.loop.call_later(delay, self._respawn, worker.slot)
        else:
            log.warning("Worker %s died (%s). Starting new worker...", worker.pid, how)
            self.spawn_worker(worker.slot)
        if worker.slot >= self.target:
            self.manage_workers()

    _exit_actions: dict[str, Callable[["Arbiter", Worker, str, str], None]] = {
        lifecycle.SHUTTING_DOWN: _exited_while_stopping,
        lifecycle.DRAINED: _exited_drained,
        lifecycle.SUCCESSOR_FAILED: _successor_failed,
        lifecycle.APP_LOAD_HALT: _app_load_halt,
        lifecycle.APP_LOAD_SLOT_DOWN: _app_load_slot_down,
        lifecycle.LISTEN_HALT: _listen_halt,
        lifecycle.SUCCESSOR_TAKES_OVER: _successor_takes_over,
        lifecycle.RESPAWN: _respawn_after_crash,
    }

    def _respawn(self, slot: int) -> None:
        self.spawn_timers.pop(slot, None)
        if self.state == "running" and slot < self.target and slot not in {w.slot for w in self.serving_workers()}:
            self.spawn_worker(slot)

    # -- stopping -----------------------------------------------------------------------
    def stop_gracefully(self) -> None:
        """Stop accepting, let workers drain, SIGKILL what is left after the timeout."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        log.info("Shutting down: draining %d workers (up to %.1f s)", len(self.primary.workers),
                 self.cfg.graceful_timeout)
        self._cancel_spawns()
        # Listeners first: the rr handle hands its queue out before the workers hear
        # "disconnect" on the same channel, so they serve it instead of refusing it.
        self.primary.close_handles()
        for worker in list(self.primary.workers.values()):
            worker.exited_after_disconnect = True
            if worker.is_connected():
                worker.disconnect()
        self.stop_timer = self.loop.call_later(self.cfg.graceful_timeout, self._graceful_deadline)
        if not self.primary.workers:
            self._stopped()

    def _graceful_deadline(self) -> None:
        alive = [w for w in self.primary.workers.values() if not w.is_dead()]
        if alive:
            log.warning("Graceful timeout: SIGKILL %d workers still draining", len(alive))
        self.stop_now()

    def stop_now(self) -> None:
        """Kill every worker at once and stop."""
        if self.state == "stopped":
            return
        self.state = "stopping"
        self._cancel_spawns()
        self.primary.close_handles()
        for worker in list(self.primary.workers.values()):
            worker.exited_after_disconnect = True
            worker.kill("SIGKILL")
        if not self.primary.workers:
            self._stopped()

    def _cancel_spawns(self) -> None:
        for timer in self.spawn_timers.values():
            timer.cancel()
        self.spawn_timers.clear()
        if self.templates is not None:
            self.templates.stop()

    def _stopped(self) -> None:
        self.state = "stopped"
        if self.stop_timer:
            self.stop_timer.cancel()
        self.loop.stop()

    # -- figures ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything status, ctl and /metrics report, as plain data."""
        workers = [self._worker_figures(w) for w in sorted(self.primary.workers.values(), key=lambda w: w.id)]
        return {
            "master": {
                "pid": os.getpid(), "state": self.state, "policy": self.cfg.policy, "bind": self.cfg.bind,
                "port": self.handle.port if self.handle else None, "app": self.cfg.app_module,
                "target_workers": self.target, "generation": self.generation,
                "uptime": round(time.time() - self.started_at, 1), "rss": rss_bytes(), "cpu_seconds": cpu_seconds(),
                "restarts": dict(self.restarts),
                "requests_total": self.retired_requests + sum(w["requests"] for w in workers),
                "reload": dict(self.rolling.status), "recent_exits": list(self.events)[-10:],
                "fork_template": self.templates.figures() if self.templates else None,
                # rr: idle keep-alive connections the master holds between requests
                "parked": len(self.handle.parking) if getattr(self.handle, "parking", None) is not None else 0,
                # rr with the keep-alive pool: connections waiting in it for their next request
                "pooled": len(self.handle.pool) if getattr(self.handle, "pool", None) is not None else 0,
            },
            "workers": workers,
        }

    def _worker_figures(self, worker: Worker) -> dict[str, Any]:
        stats, board = worker.stats, worker.board
        live = _board_is_live(worker)
        return {
            "id": worker.id, "pid": worker.pid, "state": worker.state, "slot": worker.slot,
            "generation": worker.generation,
            "requests": served(worker),
            "in_flight": board[fields.IN_FLIGHT] if live else int(stats.get("in_flight", 0)),
            "rss": int(stats.get("rss", 0)) or rss_bytes(worker.pid),
            "uptime": round(self.loop.clock() - worker.started_monotonic, 1),
            "restarts": self.slot_restarts.get(worker.slot, 0),
            "draining": bool(worker.retire_reason or worker.exited_after_disconnect),
            "connections": board[fields.CONNECTIONS] if live else 0,
            "shed": board[fields.SHED_DONE] if live else 0,
        }

    def ready(self) -> bool:
        """Whether this master should receive traffic: running, with a worker listening."""
        return self.state == "running" and any(
            w.state == LISTENING and not w.exited_after_disconnect for w in self.primary.workers.values())


def _board_is_live(worker: Worker) -> bool:
    """Whether the worker keeps its figures on its board (a real worker does from its first heartbeat).

    The board is read where it is: a heartbeat is up to a second old, and none comes while the
    worker's loop is blocked; the last heartbeat's figures stand in otherwise.
    """
    board = worker.board
    return board is not None and not board.closed and board[fields.HEARTBEATS] > 0


def served(worker: Worker) -> int:
    """Requests the worker has served: live from its board, else as its last heartbeat said."""
    if _board_is_live(worker):
        return max(worker.board[fields.SERVED], int(worker.stats.get("requests", 0)))
    return int(worker.stats.get("requests", 0))
