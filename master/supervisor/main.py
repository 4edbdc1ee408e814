"""Run the supervisor with its control socket and its HTTP endpoint, and clean up after."""
from __future__ import annotations

import logging

from . import dashboard
from .admin_http import AdminServer
from .arbiter import Arbiter
from .config import Config
from .control import ControlServer
from .logs import setup_logging
from .metrics import metrics_route, ready_route

log = logging.getLogger("master.metrics")


def run(config: Config) -> int:
    """The master's whole life; returns its exit status."""
    setup_logging(config.log_format)
    arbiter = Arbiter(config)
    control = ControlServer(config.control_socket, arbiter)
    arbiter.add_startup(control.start)
    admin = AdminServer(config.metrics_bind, arbiter.loop) if config.metrics_bind else None
    started: list[dashboard.Dashboard] = []
    if admin is not None:
        arbiter.add_startup(lambda: _start_admin(admin, arbiter, started))
    try:
        return arbiter.run()
    finally:
        control.close()
        for board in started:
            board.close()
        if admin is not None:
            admin.close()


def _start_admin(admin: AdminServer, arbiter: Arbiter, started: list[dashboard.Dashboard]) -> None:
    admin.route("/metrics", metrics_route(arbiter))
    admin.route("/ready", ready_route(arbiter))
    if admin.start():
        started.append(dashboard.install(admin, arbiter))
        host = admin.bind.rpartition(":")[0]
        log.info("Metrics at http://%s:%s/metrics (and /ready); dashboard at http://%s:%s/", host, admin.port, host,
                 admin.port)
