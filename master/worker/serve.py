"""`cluster.serve()` in a worker: ask the primary how to listen, then serve the app until drained."""
from __future__ import annotations

import socket
from typing import Any, Callable

from ..core.net import ListenError, bind_socket, parse_bind
from ..core.policies import SCHED_NONE, SCHED_REUSEPORT, SCHED_RR


def server_class(engine: str) -> type:
    """The server class of an engine (pywsgi: gevent.pywsgi; httptools: ours, on llhttp)."""
    if engine == "httptools":
        from .http import HttpServer  # noqa: PLC0415 - only a worker that serves with it loads it

        return HttpServer
    if engine != "pywsgi":
        raise ValueError(f"unknown engine {engine!r}: expected pywsgi or httptools")
    from .server import ClusterServer  # noqa: PLC0415 - gevent.pywsgi, only where it is chosen

    return ClusterServer


def open_listener(policy: str, reply: dict[str, Any], fds: list[int], host: str) -> Any:
    """The listener this worker serves on, as its policy says (None for rr)."""
    if policy == SCHED_NONE:
        if not fds:
            raise ListenError(0, "the primary sent no listening socket")
        return socket.socket(fileno=fds[0])
    if policy == SCHED_REUSEPORT:
        return bind_socket(host, int(reply["port"]), reuseport=True)
    return None


def serve(app: Callable, bind: str, runtime: Any, *, access_log: bool = False) -> None:
    """Listen on `bind` as the primary's policy says, serve `app`, return once drained."""
    if not callable(app):
        raise TypeError(f"serve() needs a WSGI callable, got {type(app).__name__}")
    host, port = parse_bind(bind)
    reply, fds = runtime.request("queryServer", address=host, port=port)
    if not reply.get("ok"):
        raise ListenError(reply.get("errno") or 0, reply.get("error") or f"cannot listen on {host}:{port}")
    policy = reply["policy"]
    listener = open_listener(policy, reply, fds, host)
    real_port = int(reply.get("port") or port)
    # wsgi.multiprocess also makes pywsgi accept one connection per wake-up (max_accept 1):
    # on a shared socket, a worker that grabbed 100 at once would starve the others.
    environ = {"SERVER_NAME": host, "SERVER_PORT": str(real_port), "wsgi.multiprocess": True}
    engine = server_class(runtime.settings.engine)
    server = engine(listener if listener is not None else (host, real_port), app, runtime, policy,
                    access_log=access_log, environ=environ)
    server.family = int(reply.get("family") or socket.AF_INET)
    server.peek = bool(reply.get("peek"))
    if listener is not None:
        server.start()
    elif policy == SCHED_RR:
        if not fds:
            raise ListenError(0, "the primary sent no handoff lane")
        server.take_lane(fds[0], fds[1:], reply)
    runtime.add_server(server)
    runtime.slicer.install()
    runtime.notify("listening", address=host, port=real_port)
    runtime.wait()
