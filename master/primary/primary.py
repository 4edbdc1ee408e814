"""The primary side of the cluster: forks workers, routes their messages, owns the listeners."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Any, Callable

from .. import scheduling
from ..scheduling.rebalance import Rebalancer
from ..core import ipc
from ..core.board import ENV as BOARD_ENV
from ..core.board import Board
from ..core.events import EventEmitter
from ..core.loop import EventLoop
from ..core.net import close_fd, parse_bind
from ..core.policies import SCHED_RR, normalize_policy
from .worker import DEAD, DISCONNECTED, LISTENING, ONLINE, Worker, signal_number

log = logging.getLogger("master.cluster")
# The folder that holds the `master` package: put on a worker's path, so that
# `python -m master.worker.child` finds this very copy even when it is not installed.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER_MODULE = "master.worker.child"


def default_policy() -> str:
    """The policy when none was chosen: CLUSTER_SCHED_POLICY, else rr (Node's Linux default)."""
    return normalize_policy(os.environ.get("CLUSTER_SCHED_POLICY") or SCHED_RR)


def exit_status(returncode: int) -> tuple[int | None, str | None]:
    """Popen's returncode as Node's (code, signal name)."""
    if returncode >= 0:
        return returncode, None
    try:
        return None, signal.Signals(-returncode).name
    except ValueError:
        return None, f"SIG{-returncode}"


class Primary(EventEmitter):
    """Everything `cluster` does in the primary process.

    Events: fork(worker), online(worker), listening(worker, address), message(worker, msg),
    disconnect(worker), exit(worker, code, signal), heartbeat(worker).
    """

    def __init__(self, *, loop: EventLoop | None = None, popen: Callable[..., Any] = subprocess.Popen) -> None:
        super().__init__()
        self.loop = loop or EventLoop()
        self.workers: dict[int, Worker] = {}
        self.settings: dict[str, Any] = {"exec": None, "args": None, "app": None, "bind": None, "env": {}}
        self.handles: dict[str, scheduling.Handle] = {}
        self._popen = popen
        self._chosen_policy: str | None = None
        self._frozen_policy: str | None = None
        self._next_id = 1
        self._signals_ready = False
        self._user_signals: set[int] = set()
        self._shutdown_count = 0
        self._stop_requested = False
        self._disconnect_callbacks: list[Callable[[], None]] = []
        self.rebalancer = Rebalancer(self.loop, self.listening_workers)
        self.other_children: dict[int, Callable[[], Any]] = {}  # pid -> its poll(): e.g. the fork template
        self.adopts_orphans = False  # a child subreaper: reap what is reparented to us

    # -- configuration ------------------------------------------------------------------
    @property
    def scheduling_policy(self) -> str:
        """rr | shared | reuseport; frozen at the first fork()."""
        return self._frozen_policy or self._chosen_policy or default_policy()

    @scheduling_policy.setter
    def scheduling_policy(self, value: str) -> None:
        policy = normalize_policy(value)
        if self._frozen_policy and policy != self._frozen_policy:
            raise RuntimeError(
                f"cluster.scheduling_policy is frozen at {self._frozen_policy!r} after the first fork()")
        self._chosen_policy = policy

    def setup_primary(self, exec: str | None = None, args: list[str] | None = None,
                      env: dict[str, str] | None = None, app: str | None = None,
                      bind: str | None = None) -> None:
        """What fork() starts: a script (`exec` + `args`) or a WSGI app spec served on `bind`."""
        if exec is not None:
            self.settings["exec"] = os.path.abspath(exec)
        if args is not None:
            self.settings["args"] = [str(a) for a in args]
        if env is not None:
            self.settings["env"] = dict(env)
        if app is not None:
            self.settings["app"] = app
        if bind is not None:
            self.settings["bind"] = bind

    def listen(self, bind: str, *, backlog: int = 2048) -> scheduling.Handle:
        """Open the listener for `bind` now, before any worker asks (raises ListenError).

        The arbiter does this so that a port in use fails the start at once, and so that
        the socket outlives every worker (connections queue while workers restart).
        """
        host, port = parse_bind(bind)
        self._freeze_policy()
        key = f"{host}:{port}"
        handle = self.handles.get(key)
        if handle is None:
            handle = scheduling.make_handle(self.scheduling_policy, host, port, self.loop,
                                            backlog=backlog, persistent=True)
            self.handles[key] = handle
            if port == 0:
                self.handles[f"{host}:{handle.port}"] = handle
        return handle

    # -- forking ------------------------------------------------------------------------
    def _freeze_policy(self) -> None:
        if not self._frozen_policy:
            self._frozen_policy = self.scheduling_policy

    def fork(self, env: dict[str, Any] | None = None) -> Worker:
        """Start a worker: a fresh interpreter running this program (or setup_primary's)."""
        self._freeze_policy()
        self._install_signal_handling()
        worker_id = self._next_id
        self._next_id += 1
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        board = Board.create()
        try:
            child_env = self._child_env(worker_id, child_sock.fileno(), env)
            child_env[BOARD_ENV] = str(board.fd)
            process = self._popen([sys.executable, "-m", WORKER_MODULE], env=child_env,
                                  pass_fds=(child_sock.fileno(), board.fd), close_fds=True)
        except BaseException:
            parent_sock.close()
            board.close()
            raise
        finally:
            child_sock.close()
        worker = Worker(worker_id, process, parent_sock, self.loop, self, board)
        self.workers[worker_id] = worker
        # Node emits 'fork' on the next tick, so handlers added right after fork() see it.
        self.loop.call_soon(self.emit, "fork", worker)
        return worker

    def template_env(self) -> dict[str, str]:
        """The environment of a fork template for the app: a worker's, without what is per worker."""
        env = self._child_env(0, -1, None)
        for key in ("PYCLUSTER_CHANNEL_FD", "PYCLUSTER_WORKER_ID"):
            env.pop(key, None)
        return env

    def _child_env(self, worker_id: int, channel_fd: int, env: dict[str, Any] | None) -> dict[str, str]:
        child_env = dict(os.environ)
        for source in (self.settings["env"], env or {}):
            for key, value in source.items():
                if value is None:
                    child_env.pop(str(key), None)
                else:
                    child_env[str(key)] = str(value)
        python_path = child_env.get("PYTHONPATH")
        child_env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + python_path if python_path else "")
        child_env.update({
            "PYCLUSTER_CHANNEL_FD": str(channel_fd),
            "PYCLUSTER_WORKER_ID": str(worker_id),
            "PYCLUSTER_MASTER_PID": str(os.getpid()),
            "PYCLUSTER_SCHED_POLICY": self.scheduling_policy,
        })
        for key in ("PYCLUSTER_EXEC", "PYCLUSTER_ARGS", "PYCLUSTER_APP", "PYCLUSTER_BIND"):
            child_env.pop(key, None)
        if self.settings["app"]:
            child_env["PYCLUSTER_APP"] = self.settings["app"]
            child_env["PYCLUSTER_BIND"] = self.settings["bind"] or "0.0.0.0:8000"
        else:
            child_env["PYCLUSTER_EXEC"] = self.settings["exec"] or os.path.abspath(sys.argv[0])
            args = self.settings["args"] if self.settings["args"] is not None else sys.argv[1:]
            child_env["PYCLUSTER_ARGS"] = json.dumps(args)
        return child_env

    # -- messages from workers (the dispatch table) ----------------------------------------
    def _worker_frame(self, worker: Worker, message: dict[str, Any], fds: list[int]) -> None:
        if message["cmd"] == ipc.USER:
            worker.emit("message", message.get("data"))
            self.emit("message", worker, message.get("data"))
            return
        handler = self._handlers.get(message.get("act", ""))
        if handler is None:
            for fd in fds:
                close_fd(fd)
            log.debug("worker %s sent an unknown act %r", worker.id, message.get("act"))
            return
        handler(self, worker, message)

    def _on_online(self, worker: Worker, _message: dict[str, Any]) -> None:
        if worker.state == "none":
            worker.state = ONLINE
        worker.emit("online")
        self.emit("online", worker)

    def _on_query_server(self, worker: Worker, message: dict[str, Any]) -> None:
        host, port = str(message.get("address", "0.0.0.0")), int(message.get("port", 0))
        key = f"{host}:{port}"
        handle = self.handles.get(key)
        if handle is None:
            try:
                handle = scheduling.make_handle(self.scheduling_policy, host, port, self.loop)
            except scheduling.ListenError as exc:
                log.error("worker %s (pid %s): %s", worker.id, worker.pid, exc.strerror)
                worker.reply(message, ok=False, errno=exc.errno, error=exc.strerror)
                return
            self.handles[key] = handle
        if worker.state == DEAD or not worker.is_connected():
            return

        def reply(fds: list[int] | None = None, **fields: Any) -> None:
            worker.reply(message, fds, **fields)

        handle.add(worker, reply)

    def _on_listening(self, worker: Worker, message: dict[str, Any]) -> None:
        worker.state = LISTENING
        worker.ever_listened = True
        self.rebalancer.start()
        address = {"address": message.get("address"), "port": message.get("port"),
                   "addressType": 6 if ":" in str(message.get("address")) else 4}
        worker.emit("listening", address)
        self.emit("listening", worker, address)

    def _on_heartbeat(self, worker: Worker, message: dict[str, Any]) -> None:
        worker.last_heartbeat = self.loop.clock()
        worker.stats = {k: v for k, v in message.items() if k not in ("cmd", "act")}
        self.emit("heartbeat", worker)

    def _on_boot_error(self, worker: Worker, message: dict[str, Any]) -> None:
        worker.boot_error = str(message.get("error", ""))

    def _on_exiting(self, worker: Worker, _message: dict[str, Any]) -> None:
        worker.exited_after_disconnect = True
        self._remove_from_handles(worker)

    _handlers: dict[str, Callable[["Primary", Worker, dict[str, Any]], None]] = {
        "online": _on_online,
        "queryServer": _on_query_server,
        "listening": _on_listening,
        "heartbeat": _on_heartbeat,
        "exiting": _on_exiting,
        "bootError": _on_boot_error,
    }

    def listening_workers(self) -> list[Worker]:
        """Workers serving now: listening, and not on their way out."""
        return [w for w in self.workers.values() if w.state == LISTENING and not w.exited_after_disconnect]

    # -- worker lifecycle ------------------------------------------------------------------
    def _worker_disconnecting(self, worker: Worker) -> None:
        """worker.disconnect() was called: no new connections for it from now on."""
        self._remove_from_handles(worker)

    def _remove_from_handles(self, worker: Worker) -> None:
        for key, handle in list(self.handles.items()):
            if worker.id in handle.workers and handle.remove(worker) and not handle.persistent:
                handle.close()
                self.handles.pop(key, None)

    def _worker_channel_closed(self, worker: Worker) -> None:
        self._remove_from_handles(worker)
        if worker.state != DEAD:
            worker.state = DISCONNECTED
        worker.emit("disconnect")
        self.emit("disconnect", worker)
        if worker.state == DEAD:
            self._forget(worker)

    def _worker_exited(self, worker: Worker, returncode: int) -> None:
        if worker.is_connected():
            worker.channel.drain()  # what it said before dying still counts
            worker.channel.close()  # disconnect is always emitted before exit (Node's order)
        code, signame = exit_status(returncode)
        worker.exit_code, worker.signal_code = code, signame
        worker.state = DEAD
        self._forget(worker)
        worker.emit("exit", code, signame)
        self.emit("exit", worker, code, signame)
        worker.board.close()
        self._check_all_disconnected()

    def _forget(self, worker: Worker) -> None:
        self.workers.pop(worker.id, None)

    def _check_all_disconnected(self) -> None:
        if not self.workers and self._disconnect_callbacks:
            callbacks, self._disconnect_callbacks = self._disconnect_callbacks, []
            for callback in callbacks:
                callback()

    def reap_workers(self) -> None:
        """Collect every exited worker (on SIGCHLD, and on a slow safety timer)."""
        for worker in list(self.workers.values()):
            if worker.state != DEAD:
                returncode = worker.process.poll()
                if returncode is not None:
                    self._worker_exited(worker, returncode)
        for poll in list(self.other_children.values()):
            poll()
        if self.adopts_orphans or os.getpid() == 1:
            self._reap_orphans()

    def _reap_orphans(self) -> None:
        """Reap exited children that are neither workers nor known to us (PID 1, or a subreaper)."""
        known = {w.pid for w in self.workers.values()} | set(self.other_children)
        while True:
            try:  # look without reaping: a known child's owner must read its status itself
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in known:
                return  # nothing exited, or the next exited child is ours to poll next turn
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                return

    # -- cluster-wide operations -----------------------------------------------------------
    def disconnect(self, callback: Callable[[], None] | None = None) -> None:
        """Disconnect every worker; `callback()` once all of them have exited."""
        if callback is not None:
            self._disconnect_callbacks.append(callback)
        for worker in list(self.workers.values()):
            if worker.is_connected():
                worker.disconnect()
        self.loop.call_soon(self._check_all_disconnected)

    def broadcast(self, message: Any) -> int:
        """Send a user message to every connected worker; returns how many got it."""
        sent = 0
        for worker in list(self.workers.values()):
            if worker.is_connected():
                worker.send(message)
                sent += 1
        return sent

    def on_signal(self, sig: int | str, fn: Callable[[str], None]) -> None:
        """Run `fn(signame)` in the loop when the primary receives `sig`."""
        signum = signal_number(sig)
        self._user_signals.add(signum)
        self.loop.add_signal_handler(signum, lambda s: fn(signal.Signals(s).name))

    def _install_signal_handling(self) -> None:
        if self._signals_ready:
            return
        self._signals_ready = True
        self.loop.add_signal_handler(signal.SIGCHLD, lambda _s: self.reap_workers())
        self._safety_reap()

    def _safety_reap(self) -> None:
        self.reap_workers()
        self.loop.call_later(1.0, self._safety_reap, ref=False)

    def _default_shutdown(self, signum: int) -> None:
        self._shutdown_count += 1
        if self._shutdown_count == 1:
            log.info("%s: disconnecting every worker", signal.Signals(signum).name)
            self.disconnect()
        else:
            for worker in list(self.workers.values()):
                worker.kill("SIGKILL")

    def run(self) -> None:
        """The primary's loop: until no worker is left (and nothing is scheduled) or stop()."""
        self._install_signal_handling()
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum not in self._user_signals:
                self.loop.add_signal_handler(signum, self._default_shutdown)
        self._stop_requested = False
        try:
            self.loop.run(until=self._finished)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signum not in self._user_signals:
                    self.loop.remove_signal_handler(signum)
            self._shutdown_count = 0

    def _finished(self) -> bool:
        return self._stop_requested or (not self.workers and not self.loop.has_pending())

    def stop(self) -> None:
        """Make run() return (workers are left as they are)."""
        self._stop_requested = True
        self.loop.stop()

    def close_handles(self) -> None:
        """Close every listener (the arbiter does this last, at shutdown)."""
        for handle in set(self.handles.values()):
            handle.close()
        self.handles.clear()

