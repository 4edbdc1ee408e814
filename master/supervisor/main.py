"""Run the supervisor with its control socket and its HTTP endpoint, and clean up after."""
from __future__ import annotations

import logging
import resource

from ..core.exitcodes import MASTER_CONTROL_SOCKET_ERROR
from . import dashboard
from .admin_http import AdminServer
from .arbiter import Arbiter, StartupRefused
from .config import Config
from .control import ControlServer
from .logs import setup_logging
from .metrics import metrics_route, ready_route
from .socket_path import ControlSocketError

log = logging.getLogger("master.main")


def run(config: Config) -> int:
    """The master's whole life; returns its exit status."""
    setup_logging(config.log_format)
    raise_nofile_limit()
    arbiter = Arbiter(config)
    control = ControlServer(config.control_socket, arbiter)
    arbiter.add_startup(lambda: _start_control(control))
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


def raise_nofile_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; workers inherit it.

    The soft limit is often 1024 while the hard one is far higher: each connection costs
    the master (rr) and a worker a descriptor, so the soft default caps a whole cluster
    at about a thousand connections for no reason.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        log.info("Raised the descriptor limit (RLIMIT_NOFILE) from %d to %d", soft, wanted)
    except (ValueError, OSError) as exc:
        log.warning("Cannot raise the descriptor limit (RLIMIT_NOFILE %d, hard %s): %s", soft, hard, exc)


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024 * 1024


def _start_control(control: ControlServer) -> None:
    try:
        control.start()
    except ControlSocketError as exc:
        raise StartupRefused(f"{exc} (or --control-socket none to run without one)",
                             MASTER_CONTROL_SOCKET_ERROR) from None


def _start_admin(admin: AdminServer, arbiter: Arbiter, started: list[dashboard.Dashboard]) -> None:
    admin.route("/metrics", metrics_route(arbiter))
    admin.route("/ready", ready_route(arbiter))
    if admin.start():
        started.append(dashboard.install(admin, arbiter))
        host = admin.bind.rpartition(":")[0]
        log.info("Metrics at http://%s:%s/metrics (and /ready); dashboard at http://%s:%s/", host, admin.port, host,
                 admin.port)
