"""`from master import cluster`: Node's cluster module, in Python.

In the primary, `cluster` forks workers and routes their events; in a worker (a process
started by fork()), `cluster.worker` is this worker and `cluster.serve()` serves a WSGI app
on the port the primary shares. The module is one object whose attributes follow the
process it runs in, as Node's does.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Any, Callable

# Only master.core at import time: a worker imports this module too, and must never load
# the primary's or the supervisor's code (tests/unit/test_layout.py checks).
from .core.ipc import ChannelClosed, MessageError  # noqa: F401
from .core.net import ListenError  # noqa: F401
from .core.policies import SCHED_NONE, SCHED_REUSEPORT, SCHED_RR  # noqa: F401

_primary: Any = None
_worker: Any = None


def _attach_worker(runtime: Any) -> None:
    """Called once by master.child: this process is a worker."""
    global _worker
    _worker = runtime


def _the_primary() -> Any:
    global _primary
    if _worker is not None:
        raise RuntimeError(f"this is worker {_worker.id}: only the primary can do that")
    if _primary is None:
        from .primary.primary import Primary

        _primary = Primary()
    return _primary


def _reset_primary() -> None:
    """Forget the primary's state (tests run several clusters in one process)."""
    global _primary
    if _primary is not None:
        _primary.close_handles()
        _primary.loop.close()
    _primary = None


def fork(env: dict[str, Any] | None = None) -> Any:
    """Start a worker running this program (or what setup_primary() names); returns the Worker."""
    if _worker is not None:
        raise RuntimeError(f"cluster.fork() can only be called in the primary (this is worker {_worker.id})")
    return _the_primary().fork(env)


def setup_primary(exec: str | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
                  app: str | None = None, bind: str | None = None) -> None:
    """Set what fork() starts: a script and its args, or an app spec ('module:attr') and bind."""
    _the_primary().setup_primary(exec=exec, args=args, env=env, app=app, bind=bind)


setupPrimary = setup_primary  # noqa: N816 - Node's spelling


def on(event: str, fn: Callable[..., Any] | None = None) -> Any:
    """Listen to a cluster event (fork, online, listening, message, disconnect, exit); usable as a decorator."""
    target = _worker if _worker is not None else _the_primary()
    if fn is None:
        return lambda f: target.on(event, f)
    return target.on(event, fn)


def once(event: str, fn: Callable[..., Any]) -> Any:
    """Listen to the next `event` only."""
    target = _worker if _worker is not None else _the_primary()
    return target.once(event, fn)


def run() -> None:
    """Primary: run the event loop until no worker is left. Worker: wait until disconnected."""
    if _worker is not None:
        _worker.wait()
        return
    _the_primary().run()


def stop() -> None:
    """Make cluster.run() return in the primary."""
    _the_primary().stop()


def disconnect(callback: Callable[[], None] | None = None) -> None:
    """Primary: disconnect every worker (callback once all exited). Worker: leave gracefully."""
    if _worker is not None:
        _worker.disconnect()
        return
    _the_primary().disconnect(callback)


def broadcast(message: Any) -> int:
    """Send a user message to every connected worker."""
    return _the_primary().broadcast(message)


def on_signal(sig: int | str, fn: Callable[[str], None]) -> None:
    """Run `fn(signame)` in the primary's loop when `sig` arrives (replaces the default for INT/TERM)."""
    _the_primary().on_signal(sig, fn)


def call_later(delay: float, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in the primary's loop after `delay` seconds (Node's setTimeout)."""
    return _the_primary().loop.call_later(delay, fn, *args)


def call_every(interval: float, fn: Callable[[], Any]) -> Any:
    """Run `fn()` every `interval` seconds while the loop runs (Node's setInterval, unref'd)."""
    loop = _the_primary().loop
    state: dict[str, Any] = {}

    def tick() -> None:
        fn()
        state["timer"] = loop.call_later(interval, tick, ref=False)

    state["timer"] = loop.call_later(interval, tick, ref=False)
    return state


def serve(app: Callable, bind: str | int = "0.0.0.0:3000", *, access_log: bool = False) -> None:
    """Worker: serve a WSGI app on the port the primary shares; blocks until disconnected."""
    if _worker is None:
        raise RuntimeError("cluster.serve() runs in a worker; in the primary, call cluster.fork()")
    from .worker.serve import serve as serve_app

    serve_app(app, str(bind), _worker, access_log=access_log)


class _ClusterModule(types.ModuleType):
    """Makes `cluster.workers`, `cluster.worker`, `cluster.scheduling_policy` live attributes."""

    @property
    def is_worker(self) -> bool:
        return _worker is not None

    @property
    def is_primary(self) -> bool:
        return _worker is None

    is_master = is_primary

    @property
    def worker(self) -> Any:
        return _worker

    @property
    def workers(self) -> dict[int, Any]:
        return {} if _worker is not None else _the_primary().workers

    @property
    def settings(self) -> dict[str, Any]:
        return _the_primary().settings

    @property
    def loop(self) -> Any:
        return _the_primary().loop

    @property
    def scheduling_policy(self) -> str:
        if _worker is not None:
            return os.environ.get("PYCLUSTER_SCHED_POLICY", SCHED_RR)
        return _the_primary().scheduling_policy

    @scheduling_policy.setter
    def scheduling_policy(self, value: str) -> None:
        _the_primary().scheduling_policy = value

    schedulingPolicy = scheduling_policy  # noqa: N815 - Node's spelling


sys.modules[__name__].__class__ = _ClusterModule
