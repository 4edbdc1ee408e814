"""The master's configuration: flags with environment twins, validated once, frozen.

One table (OPTIONS) drives the parser, the environment lookup and the README's table. Each
option has a kind, and each kind one parser: a switch reads 1/0, true/false, yes/no, on/off
the same way everywhere, and nothing past this module parses a flag again (workers get
their part as a WorkerSettings record).
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..core.app_spec import AppSpecError, parse_spec
from ..core.net import format_bind, parse_bind
from ..core.policies import POLICY_NAMES, normalize_policy
from ..core.settings import WorkerSettings

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
LOG_FORMATS = ("text", "json")
ENGINES = ("httptools", "pywsgi")
SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class ConfigError(ValueError):
    """A flag or environment value that cannot be used; its message is the one-line error."""


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as cpu_max:  # cgroup v2: "max 100000" or "200000 100000"
            quota, period = cpu_max.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as q, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as p:
            quota_us, period_us = int(q.read()), int(p.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def heartbeat_interval(worker_timeout: float) -> float:
    """Seconds between a worker's heartbeats (and the watchdog's checks): several per timeout."""
    return max(0.05, min(1.0, worker_timeout / 4)) if worker_timeout else 1.0


# -- the kinds of value, each read by one function -------------------------------------------
def parse_switch(flag: str, raw: str) -> bool:
    """1/0, true/false, yes/no, on/off (any case); anything else is a ConfigError."""
    value = SWITCH_VALUES.get(str(raw).strip().lower())
    if value is None:
        raise ConfigError(f"invalid {flag} {raw!r}: expected 1 or 0 (or true/false, yes/no, on/off)")
    return value


def parse_size(text: str, flag: str = "size") -> int:
    """'512M', '1g', '1048576' -> bytes; ConfigError otherwise."""
    match = SIZE.match(str(text))
    if not match:
        raise ConfigError(f"invalid {flag} {text!r}: use bytes or a unit, e.g. 512M or 1G")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _count(flag: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"invalid {flag} {raw!r}: expected a whole number") from None
    if value < 0:
        raise ConfigError(f"invalid {flag} {value}: must be 0 or more")
    return value


def _seconds(flag: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"invalid {flag} {raw!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"invalid {flag} {raw!r}: must be 0 or more seconds")
    return value


MAX_TIME_SLICE = 1.0  # seconds; longer is as good as off, and the kernel's timer has a range


def _time_slice(flag: str, raw: str) -> float:
    value = _seconds(flag, raw)
    if value > MAX_TIME_SLICE:
        raise ConfigError(f"invalid {flag} {raw!r}: at most {MAX_TIME_SLICE:g} seconds (0 turns slices off)")
    return value


def _text(_flag: str, raw: str) -> str:
    return raw


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(flag: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"invalid {flag} {raw!r}: expected {' or '.join(choices)}")
        return value
    return parse


def _policy(flag: str, raw: str) -> str:
    try:
        return normalize_policy(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid {flag}: {exc}") from None


def _address(flag: str, raw: str) -> str:
    try:
        return format_bind(*parse_bind(raw))
    except ValueError as exc:
        raise ConfigError(f"invalid {flag}: {exc}") from None


def _address_or_none(flag: str, raw: str) -> str | None:
    return None if raw.strip().lower() in ("none", "off", "") else _address(flag, raw)


def _peers(flag: str, raw: str) -> tuple[tuple[str, int], ...]:
    """'app:9100' or 'a:9100,b:9100' -> ((host, port), ...); each host may resolve to many replicas."""
    peers = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"invalid {flag} {item!r}: expected HOST:PORT of the replicas' metrics endpoint, "
                              "e.g. app:9100")
        peers.append((host, int(port)))
    return tuple(dict.fromkeys(peers))


# (flag, env twin, parser, default, help). The default is the raw text the parser reads.
OPTIONS: list[tuple[str, str, Callable[[str, str], Any], str | None, str]] = [
    ("--workers", "WORKERS", _count, None, "number of worker processes (default: CPUs available to the process)"),
    ("--bind", "BIND", _address, "0.0.0.0:8000", "HOST:PORT to listen on; PORT overrides the port"),
    ("--policy", "CLUSTER_SCHED_POLICY", _policy, "rr", f"scheduling policy: {' | '.join(POLICY_NAMES)}"),
    ("--graceful-timeout", "GRACEFUL_TIMEOUT", _seconds, "10", "seconds a worker gets to drain before SIGKILL"),
    ("--log-format", "LOG_FORMAT", _choice(*LOG_FORMATS), "text", "log format: text | json"),
    ("--worker-timeout", "WORKER_TIMEOUT", _seconds, "30",
     "seconds without a heartbeat before a worker is killed (0: off)"),
    ("--max-requests", "MAX_REQUESTS", _count, "0", "recycle a worker after this many requests (0: off)"),
    ("--max-requests-jitter", "MAX_REQUESTS_JITTER", _count, "0",
     "random extra requests per worker, so they do not recycle together"),
    ("--max-memory", "MAX_MEMORY", lambda flag, raw: parse_size(raw, flag), "0", "recycle a worker whose RSS exceeds this, e.g. 512M (0: off)"),
    ("--control-socket", "CONTROL_SOCKET", _text, "", "control socket path, in a directory only you can write, "
     "or 'none' (default: a private directory, per user and port)"),
    ("--metrics-bind", "METRICS_BIND", _address_or_none, "127.0.0.1:9100",
     "HOST:PORT for Prometheus metrics, /ready and the dashboard, or 'none'"),
    ("--dashboard-peers", "DASHBOARD_PEERS", _peers, "",
     "HOST:PORT[,...] whose DNS records are every replica's metrics endpoint: the dashboard then "
     "shows them all (/cluster.json); empty: off"),
    ("--backlog", "BACKLOG", _count, "2048", "listen backlog"),
    ("--access-log", "ACCESS_LOG", parse_switch, "0", "log every request from the workers (1/0)"),
    ("--retry-idempotent", "RETRY_IDEMPOTENT", parse_switch, "1",
     "rr: give an idempotent request a SIGKILLed worker was serving to another worker, once (1/0)"),
    ("--keepalive-pool", "KEEPALIVE_POOL", parse_switch, "1",
     "rr with the httptools engine: keep-alive connections wait for their next request in one readiness "
     "set all workers share, so a free worker serves it (1/0; master/core/pool.py)"),
    ("--batch-scheduling", "BATCH_SCHEDULING", parse_switch, "1",
     "Linux: run the master (not its workers) as SCHED_BATCH, so it hands connections over in batches (1/0)"),
    ("--engine", "ENGINE", _choice(*ENGINES), "httptools", f"the workers' HTTP layer: {' | '.join(ENGINES)}"),
    ("--fork-template", "FORK_TEMPLATE", parse_switch, "1",
     "fork workers from a process that has imported the app (made anew on every reload), not fresh interpreters (1/0)"),
    ("--header-timeout", "HEADER_TIMEOUT", _seconds, "10", "seconds to receive a request head (0: no limit)"),
    ("--body-timeout", "BODY_TIMEOUT", _seconds, "10", "seconds a request body may stall (0: no limit)"),
    ("--keepalive-timeout", "KEEPALIVE_TIMEOUT", _seconds, "5",
     "seconds an idle keep-alive connection stays open (0: no limit)"),
    ("--worker-connections", "WORKER_CONNECTIONS", _count, "1000",
     "connections one worker serves at once; more wait in the kernel's queue (0: no cap)"),
    ("--max-header-bytes", "MAX_HEADER_BYTES", lambda flag, raw: parse_size(raw, flag), "64K",
     "request line and headers; larger: 431"),
    ("--limit-request-line", "LIMIT_REQUEST_LINE", _count, "8190", "request line bytes; longer: 414"),
    ("--limit-request-fields", "LIMIT_REQUEST_FIELDS", _count, "100", "header fields; more: 431"),
    ("--max-body-bytes", "MAX_BODY_BYTES", lambda flag, raw: parse_size(raw, flag), "100M",
     "request body; larger: 413 and the connection closes (0: no limit)"),
    ("--time-slice", "TIME_SLICE", _time_slice, "0.002",
     "seconds of CPU a computing request keeps before the others on its worker get a turn, "
     "as threads get from the GIL (0: off; master/worker/time_slice.py)"),
]
# Passed to every worker as they are (WorkerSettings has a field of the same name).
WORKER_FIELDS = ("access_log", "engine", "header_timeout", "body_timeout", "keepalive_timeout",
                 "worker_connections", "max_header_bytes", "limit_request_line", "limit_request_fields",
                 "max_body_bytes", "time_slice")
SHOWN_DEFAULTS = {"--workers": "CPUs", "--control-socket": "per user and port"}


@dataclass(frozen=True)
class Config:
    """Everything the supervisor needs, already validated."""

    app_module: str
    workers: int
    bind: str
    policy: str = "rr"
    graceful_timeout: float = 10.0
    log_format: str = "text"
    worker_timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_memory: int = 0
    control_socket: str = ""
    metrics_bind: str | None = "127.0.0.1:9100"
    dashboard_peers: tuple[tuple[str, int], ...] = ()
    backlog: int = 2048
    access_log: bool = False
    retry_idempotent: bool = True
    keepalive_pool: bool = True
    batch_scheduling: bool = True
    engine: str = "httptools"
    fork_template: bool = True
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    worker_connections: int = 1000
    max_header_bytes: int = 64 * 1024
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    max_body_bytes: int = 100 * 1024 * 1024
    time_slice: float = 0.002

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats, and between the watchdog's checks."""
        return heartbeat_interval(self.worker_timeout)

    def worker_settings(self) -> WorkerSettings:
        """What the workers are told about how to serve."""
        return WorkerSettings(heartbeat_interval=self.heartbeat_interval,
                              **{name: getattr(self, name) for name in WORKER_FIELDS})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump, exit 2
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """The `pycluster` argument parser (every flag names its environment twin)."""
    parser = _Parser(
        prog="pycluster",
        description="Run a WSGI app on a cluster of workers sharing one port (Node's cluster module, for Python). "
                    "Every flag has an environment twin; flags win over the environment. "
                    "`pycluster ctl --help` controls a running master.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app_module", nargs="?", metavar="APP",
                        help="module:attribute of a WSGI app, or module:factory() (env APP_MODULE), "
                             "e.g. myapp:app or 'myapp:create_app()'")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    for flag, env, _parse, default, text in OPTIONS:
        shown = SHOWN_DEFAULTS.get(flag, default)
        parser.add_argument(flag, dest=_dest(flag), default=None, help=f"{text} [env {env}; default {shown}]")
    return parser


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _read(args: argparse.Namespace, environ: dict[str, str], option: tuple) -> Any:
    flag, env, parse, default, _help = option
    raw, source = getattr(args, _dest(flag)), flag
    if raw is None and environ.get(env, "") != "":
        raw, source = environ[env], env
    if raw is None:
        raw = default
    return None if raw is None else parse(source, raw)


def _app_module(args: argparse.Namespace, environ: dict[str, str]) -> str:
    app_module = args.app_module or environ.get("APP_MODULE", "")
    if not app_module:
        raise ConfigError("missing APP_MODULE: give module:attribute of a WSGI app, e.g. `pycluster myapp:app`")
    try:
        parse_spec(app_module)
    except AppSpecError as exc:
        raise ConfigError(f"invalid APP_MODULE: {exc}") from None
    return app_module


def _bind(args: argparse.Namespace, environ: dict[str, str], bind: str) -> str:
    """BIND, with PORT overriding its port when --bind was not given."""
    port_text = environ.get("PORT", "").strip()
    if args.bind is not None or not port_text:
        return bind
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"invalid PORT {port_text!r}: expected a port number 0..65535")
    return format_bind(parse_bind(bind)[0], int(port_text))


def load_config(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Parse flags and environment into a validated Config (ConfigError on bad input)."""
    environ = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    values = {_dest(option[0]): _read(args, environ, option) for option in OPTIONS}
    workers = values.pop("workers")
    workers = available_cpus() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"invalid --workers {workers}: need at least 1")
    values["bind"] = _bind(args, environ, values["bind"])
    values["backlog"] = values["backlog"] or 2048
    return Config(app_module=_app_module(args, environ), workers=workers, **values)


def wants_version(argv: Sequence[str]) -> bool:
    """Whether the command line asks for --version (answered before anything is validated)."""
    return "--version" in argv
