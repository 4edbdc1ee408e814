"""`reuseport`: each worker binds its own SO_REUSEPORT socket; the kernel hashes connections.

The primary binds one SO_REUSEPORT socket without listening on it: that reserves the port
(port 0 resolves once, for everybody), surfaces EADDRINUSE in the primary, and never
receives connections, because the kernel only hashes to listening members of the group.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ..core.net import bind_socket
from .base import Handle, Reply

log = logging.getLogger("master.scheduling")
MIGRATE_SYSCTL = "/proc/sys/net/ipv4/tcp_migrate_req"


def enable_migrate_req(path: str | None = None) -> bool:
    """Set net.ipv4.tcp_migrate_req=1 where we may; log clearly where we may not.

    Without it, closing a worker's listener resets the connections in its accept queue;
    with it, the kernel migrates them to another listener of the group. It must be set
    before the group exists, so the primary does it before binding.
    """
    path = path or os.environ.get("PYCLUSTER_TCP_MIGRATE_REQ_PATH", MIGRATE_SYSCTL)
    try:
        with open(path) as current:
            if current.read().strip() == "1":
                log.info("reuseport: net.ipv4.tcp_migrate_req is already 1; a closing worker's queue migrates")
                return True
        with open(path, "w") as sysctl:
            sysctl.write("1\n")
        log.info("reuseport: set net.ipv4.tcp_migrate_req=1; a closing worker's queue migrates")
        return True
    except OSError as exc:
        log.warning(
            "reuseport: cannot set net.ipv4.tcp_migrate_req=1 (%s): connections queued on a "
            "worker's socket are reset when that worker closes it; run as root or set the "
            "sysctl (docker: sysctls: net.ipv4.tcp_migrate_req: 1)", exc.strerror or exc)
        return False


class ReusePortHandle(Handle):
    """Tells each worker to bind its own SO_REUSEPORT socket on the reserved port."""

    policy = "reuseport"

    def add(self, worker: Any, reply: Reply) -> None:
        """Tell the worker to bind its own socket (at start-up, all of them together)."""
        self.workers[worker.id] = worker
        self.admit_together(lambda: reply(ok=True, policy=self.policy, port=self.port))

    def open(self, host: str, port: int) -> socket.socket:
        """Set the sysctl, then reserve the port without listening."""
        self.migrate_req = enable_migrate_req()
        return bind_socket(host, port, reuseport=True, listen=False)
