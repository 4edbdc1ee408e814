"""The production master: keeps N workers serving, restarts, reloads, drains, and stops.

Built on the cluster API (primary.py). Signals and control-socket commands both end in the
`command_<name>` methods, run by the loop (DESIGN.md style 3: handlers only enqueue).
The loop reconciles the wanted worker count with the real one in manage_workers().
"""
from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections import Counter, deque
from typing import Any, Callable

from . import cpu_class
from .backoff import Backoff
from .config import Config
from .exitcodes import (MASTER_APP_LOAD_ERROR as EXIT_APP_LOAD, MASTER_CANNOT_LISTEN as EXIT_CANNOT_LISTEN,
                        MASTER_OK as EXIT_OK,
                        WORKER_APP_LOAD_ERROR as EXIT_APP_LOAD_ERROR, WORKER_LISTEN_ERROR as EXIT_LISTEN_ERROR)
from .primary import Primary
from .scheduling import ListenError
from .stats import cpu_seconds, rss_bytes
from .worker import DEAD, LISTENING, Worker

log = logging.getLogger("master.arbiter")

READY_TIMEOUT = 60.0  # a new worker must be listening within this during a rolling restart
STACK_DUMP_WINDOW = 0.5  # how long a timed-out worker gets to write its stacks before SIGKILL
SIGNAL_COMMANDS = {
    signal.SIGTERM: ("stop", {}),
    signal.SIGINT: ("stop", {}),
    signal.SIGQUIT: ("stop", {"graceful": False}),
    signal.SIGHUP: ("reload", {}),
    signal.SIGUSR2: ("reload", {}),
    signal.SIGTTIN: ("scale", {"delta": 1}),
    signal.SIGTTOU: ("scale", {"delta": -1}),
}


def describe_exit(code: int | None, signame: str | None) -> str:
    """'SIGKILL' or 'exit code 3'."""
    return signame if signame else f"exit code {code}"


class Arbiter:
    """Supervises the workers of one app on one address."""

    def __init__(self, config: Config, *, primary: Primary | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.cfg = config
        self.primary = primary or Primary()
        self.loop = self.primary.loop
        self.env = dict(env or {})
        # Heartbeats come several times per timeout, so a healthy worker is never late.
        interval = min(1.0, config.worker_timeout / 4) if config.worker_timeout else 1.0
        self.env.setdefault("PYCLUSTER_HEARTBEAT_INTERVAL", f"{max(0.05, interval):.3f}")
        self.target = config.workers
        self.generation = 0
        self.state = "starting"
        self.exit_code = EXIT_OK
        self.started_at = time.time()
        self.ever_listening = False
        self.backoffs: dict[int, Backoff] = {}
        self.spawn_timers: dict[int, Any] = {}
        self.restarts: Counter[str] = Counter()
        self.slot_restarts: Counter[int] = Counter()
        self.retired_requests = 0  # requests served by workers that are gone (counters never go back)
        self.reload_queue: deque[Worker] = deque()
        self.reload_status: dict[str, Any] = {"state": "idle"}
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.handle: Any = None
        self.stop_timer: Any = None
        self.stop_count = 0
        self._startups: list[Callable[[], None]] = []

    # -- start --------------------------------------------------------------------------
    def run(self) -> int:
        """Start, supervise until stopped, clean up; returns the exit status."""
        log.info("Master %s is running", os.getpid())
        if self.cfg.batch_scheduling:
            child_env, account = cpu_class.use_batch()
            self.env.update(child_env)
            log.info("Master %s", account)
        self.primary.setup_primary(app=self.cfg.app_module, bind=self.cfg.bind, env=self.env)
        self.primary.scheduling_policy = self.cfg.policy
        try:
            self.handle = self.primary.listen(self.cfg.bind, backlog=self.cfg.backlog)
            self.handle.retry_idempotent = self.cfg.retry_idempotent  # rr reads it; others ignore it
        except ListenError as exc:
            log.error("%s", exc.strerror)
            return EXIT_CANNOT_LISTEN
        host = self.cfg.bind.rpartition(":")[0]
        log.info("Listening at http://%s:%s (policy %s)", host, self.handle.port, self.cfg.policy)
        self.primary.on("online", self._on_online)
        self.primary.on("listening", self._on_listening)
        self.primary.on("exit", self._on_exit)
        self.primary.on("heartbeat", self._on_heartbeat)
        for signum, (name, kwargs) in SIGNAL_COMMANDS.items():
            self.loop.add_signal_handler(signum, lambda _s, n=name, k=kwargs: self.command(n, **k))
        for start in self._startups:
            start()
        log.info("Forking %d workers...", self.target)
        self.state = "running"
        self.manage_workers()
        self._watchdog_tick()
        try:
            self.loop.run(until=self._finished)
        finally:
            self.primary.close_handles()
        log.info("Master %s exiting (status %d)", os.getpid(), self.exit_code)
        return self.exit_code

    def add_startup(self, start: Callable[[], None]) -> None:
        """Run `start()` once the listener is open (control socket, metrics)."""
        self._startups.append(start)

    def _finished(self) -> bool:
        return self.state == "stopped"

    # -- the command path shared by signals and the control socket -----------------------
    def command(self, name: str, **kwargs: Any) -> dict[str, Any]:
        """Run one command; returns a JSON-able result ({"ok": bool, ...})."""
        handler = getattr(self, f"command_{name.replace('-', '_')}", None)
        if handler is None:
            return {"ok": False, "error": f"unknown command {name!r}"}
        try:
            return handler(**kwargs)
        except (TypeError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}

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
        if self.reload_status.get("state") == "running":
            return {"ok": False, "error": "a rolling restart is already running"}
        self.generation += 1
        self.reload_queue = deque(sorted(self.serving_workers(), key=lambda w: w.id))
        self.reload_status = {"state": "running", "generation": self.generation, "total": len(self.reload_queue),
                              "replaced": 0, "started": time.time()}
        log.info("Rolling restart: replacing %d workers one at a time", len(self.reload_queue))
        self.loop.call_soon(self._reload_next)
        return {"ok": True, "replacing": len(self.reload_queue)}

    def command_scale(self, workers: int | None = None, delta: int | None = None) -> dict[str, Any]:
        """Set the worker count (or change it by `delta`); scaling down drains the oldest."""
        target = int(workers) if workers is not None else self.target + int(delta or 0)
        if target < 1:
            raise ValueError(f"cannot scale to {target}: need at least 1 worker")
        if self.state != "running":
            return {"ok": False, "error": f"cannot scale while {self.state}"}
        log.info("Scaling from %d to %d workers", self.target, target)
        self.target = target
        self.manage_workers()
        return {"ok": True, "workers": target}

    def command_kill_worker(self, id: int, signal_name: str = "SIGKILL") -> dict[str, Any]:  # noqa: A002
        """Send a signal to one worker (default SIGKILL: a crash, so it is replaced)."""
        worker = self.primary.workers.get(int(id))
        if worker is None or worker.is_dead():
            return {"ok": False, "error": f"no live worker with id {id}"}
        from .worker import signal_number

        worker.signal(signal_number(signal_name))
        return {"ok": True, "pid": worker.pid}

    def command_broadcast(self, message: Any = None) -> dict[str, Any]:
        """Send a user message to every worker."""
        return {"ok": True, "sent": self.primary.broadcast(message)}

    # -- reconciling --------------------------------------------------------------------
    def serving_workers(self) -> list[Worker]:
        """Live workers that are not on their way out."""
        return [w for w in self.primary.workers.values()
                if not w.exited_after_disconnect and not w.is_dead() and not getattr(w, "replaced_by", None)]

    def occupied_slots(self) -> set[int]:
        """Slots with a serving worker or a respawn already scheduled."""
        return {w.slot for w in self.serving_workers()} | set(self.spawn_timers)

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
        worker.replaced_by = None
        worker.retire_reason = None
        worker.kill_reason = None
        worker.request_limit = (self.cfg.max_requests + random.randint(0, self.cfg.max_requests_jitter)
                                if self.cfg.max_requests else 0)
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
        if worker.is_dead() or worker.retire_reason or getattr(worker, "replaced_by", None):
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
        self.ever_listening = True
        worker._listened = True
        previous = getattr(worker, "replaces", None)
        if previous is not None and not previous.is_dead():
            log.info("Worker %s is listening; draining worker %s (%s)", worker.pid, previous.pid,
                     worker.replace_reason)
            self.retire_worker(previous, worker.replace_reason)
            if worker.replace_reason == "reload":
                previous.once("exit", lambda *_: self._reload_step_done())

    def _on_heartbeat(self, worker: Worker) -> None:
        if worker.state != LISTENING or worker.retire_reason or getattr(worker, "replaced_by", None):
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
        self.retired_requests += int(worker.stats.get("requests", 0))
        how = describe_exit(code, signame)
        uptime = time.monotonic() - worker.started_monotonic
        self.events.append({"ts": time.time(), "worker": worker.id, "pid": worker.pid, "exit": how,
                            "reason": worker.retire_reason or worker.kill_reason or "crash"})
        successor = getattr(worker, "replaced_by", None)
        predecessor = getattr(worker, "replaces", None)
        if self.state in ("stopping", "stopped"):
            log.info("Worker %s exited (%s)", worker.pid, how)
            if not self.primary.workers:
                self._stopped()
            return
        if worker.exited_after_disconnect and worker.retire_reason:
            log.info("Worker %s exited after draining (%s)", worker.pid, worker.retire_reason)
            self.manage_workers()
            return
        if predecessor is not None and worker.state == DEAD and not self._has_listened(worker):
            # A successor died before it was ready: keep the old worker serving.
            predecessor.replaced_by = None
            reason = getattr(worker, "replace_reason", "replace")
            why = f"new worker {worker.pid} exited ({how}) before listening" + (
                f": {worker.boot_error}" if getattr(worker, "boot_error", None) else "")
            log.error("%s; %s stopped, worker %s keeps serving", why[0].upper() + why[1:],
                      "rolling restart" if reason == "reload" else reason, predecessor.pid)
            if reason == "reload":
                self._reload_failed(why)
            return
        if code == EXIT_APP_LOAD_ERROR:
            reason = getattr(worker, "boot_error", None) or f"cannot load app {self.cfg.app_module!r}"
            if not self.ever_listening:
                log.error("%s: halting", reason)
                self.exit_code = EXIT_APP_LOAD
                self.stop_now()
            else:
                log.error("Worker %s %s: not respawning slot %d (fix the app, then reload)",
                          worker.pid, reason, worker.slot)
            return
        if code == EXIT_LISTEN_ERROR:
            log.error("Worker %s cannot listen: halting", worker.pid)
            self.exit_code = EXIT_CANNOT_LISTEN
            self.stop_now()
            return
        if successor is not None and not successor.is_dead():
            # It crashed while its successor was booting: the successor takes the slot.
            successor.replaces = None
            log.info("Worker %s died (%s); its successor %s takes over", worker.pid, how, successor.pid)
            return
        reason = worker.kill_reason or "crash"
        self.restarts[reason] += 1
        self.slot_restarts[worker.slot] += 1
        delay = self.backoffs.setdefault(worker.slot, Backoff()).next_delay(uptime)
        if delay:
            log.warning("Worker %s died (%s). Starting new worker in %.1f s (crash loop backoff)...",
                        worker.pid, how, delay)
            self.spawn_timers[worker.slot] = self.loop.call_later(delay, self._respawn, worker.slot)
        else:
            log.warning("Worker %s died (%s). Starting new worker...", worker.pid, how)
            self.spawn_worker(worker.slot)
        if worker.slot >= self.target:
            self.manage_workers()

    def _respawn(self, slot: int) -> None:
        self.spawn_timers.pop(slot, None)
        if self.state == "running" and slot < self.target and slot not in {w.slot for w in self.serving_workers()}:
            self.spawn_worker(slot)

    @staticmethod
    def _has_listened(worker: Worker) -> bool:
        return bool(getattr(worker, "_listened", False))

    # -- rolling restart ----------------------------------------------------------------
    def _reload_next(self) -> None:
        if self.reload_status.get("state") != "running" or self.state != "running":
            return
        while self.reload_queue:
            old = self.reload_queue.popleft()
            if old.is_dead() or old.retire_reason:
                continue
            successor = self.replace_worker(old, "reload")
            if successor is None:
                continue
            successor.generation = self.generation
            self.reload_status["current"] = {"old": old.pid, "new": successor.pid}
            self.loop.call_later(READY_TIMEOUT, self._reload_ready_timeout, successor)
            return
        self.reload_status.update(state="done", finished=time.time())
        self.reload_status.pop("current", None)
        log.info("Rolling restart done: %d workers replaced", self.reload_status.get("replaced", 0))

    def _reload_step_done(self) -> None:
        self.reload_status["replaced"] = self.reload_status.get("replaced", 0) + 1
        self._reload_next()

    def _reload_ready_timeout(self, successor: Worker) -> None:
        if successor.is_dead() or self._has_listened(successor) or self.reload_status.get("state") != "running":
            return
        log.error("New worker %s not listening after %.0f s: rolling restart stopped", successor.pid, READY_TIMEOUT)
        successor.kill("SIGKILL")

    def _reload_failed(self, why: str) -> None:
        self.reload_status.update(state="failed", error=why, finished=time.time())
        self.reload_status.pop("current", None)
        self.reload_queue.clear()

    # -- watchdog -----------------------------------------------------------------------
    def _watchdog_tick(self) -> None:
        timeout = self.cfg.worker_timeout
        if timeout and self.state == "running":
            now = self.loop.clock()
            for worker in list(self.primary.workers.values()):
                if worker.state == LISTENING and not worker.kill_reason and now - worker.last_heartbeat > timeout:
                    self.murder_worker(worker, now - worker.last_heartbeat)
        interval = min(1.0, timeout / 4) if timeout else 1.0
        self.loop.call_later(interval, self._watchdog_tick, ref=False)

    def murder_worker(self, worker: Worker, silent_for: float) -> None:
        """A worker missed its heartbeats: log its stacks, kill it; the exit path replaces it."""
        worker.kill_reason = "timeout"
        log.error("Worker %s timed out (no heartbeat for %.1f s): dumping its stacks, then SIGKILL",
                  worker.pid, silent_for)
        worker.signal(signal.SIGUSR1)  # faulthandler: every thread's stack to stderr
        worker.signal(signal.SIGCONT)  # a stopped worker must run to write them
        self.loop.call_later(STACK_DUMP_WINDOW, lambda: worker.is_dead() or worker.signal(signal.SIGKILL))

    # -- stopping -----------------------------------------------------------------------
    def stop_gracefully(self) -> None:
        """Stop accepting, let workers drain, SIGKILL what is left after the timeout."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        log.info("Shutting down: draining %d workers (up to %.1f s)", len(self.primary.workers),
                 self.cfg.graceful_timeout)
        for timer in self.spawn_timers.values():
            timer.cancel()
        self.spawn_timers.clear()
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
        for timer in self.spawn_timers.values():
            timer.cancel()
        self.spawn_timers.clear()
        self.primary.close_handles()
        for worker in list(self.primary.workers.values()):
            worker.exited_after_disconnect = True
            worker.kill("SIGKILL")
        if not self.primary.workers:
            self._stopped()

    def _stopped(self) -> None:
        self.state = "stopped"
        if self.stop_timer:
            self.stop_timer.cancel()
        self.loop.stop()

    # -- figures ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything status, ctl and /metrics report, as plain data."""
        now = time.monotonic()
        workers = []
        for worker in sorted(self.primary.workers.values(), key=lambda w: w.id):
            stats = worker.stats
            workers.append({
                "id": worker.id, "pid": worker.pid, "state": worker.state,
                "slot": getattr(worker, "slot", None), "generation": getattr(worker, "generation", 0),
                "requests": int(stats.get("requests", 0)), "in_flight": int(stats.get("in_flight", 0)),
                "rss": int(stats.get("rss", 0)) or rss_bytes(worker.pid),
                "uptime": round(now - worker.started_monotonic, 1),
                "restarts": self.slot_restarts.get(getattr(worker, "slot", -1), 0),
                "draining": bool(worker.retire_reason or worker.exited_after_disconnect),
            })
        return {
            "master": {
                "pid": os.getpid(), "state": self.state, "policy": self.cfg.policy, "bind": self.cfg.bind,
                "port": self.handle.port if self.handle else None, "app": self.cfg.app_module,
                "target_workers": self.target, "generation": self.generation,
                "uptime": round(time.time() - self.started_at, 1), "rss": rss_bytes(), "cpu_seconds": cpu_seconds(),
                "restarts": dict(self.restarts), "requests_total": self.retired_requests + sum(
                    w["requests"] for w in workers),
                "reload": dict(self.reload_status), "recent_exits": list(self.events)[-10:],
            },
            "workers": workers,
        }
