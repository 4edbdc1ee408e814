"""The master's configuration: flags with environment twins, validated once, frozen."""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .scheduling import POLICIES, normalize_policy

APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
LOG_FORMATS = ("text", "json")


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


def parse_size(text: str) -> int:
    """'512M', '1g', '1048576' -> bytes; ConfigError otherwise."""
    match = SIZE.match(str(text))
    if not match:
        raise ConfigError(f"invalid size {text!r}: use bytes or a unit, e.g. 512M or 1G")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def default_control_socket(bind: str) -> str:
    """A path any user can create, also non-root in a container (unlike gunicorn 27's default)."""
    port = bind.rpartition(":")[2] or "8000"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime_dir if runtime_dir and os.access(runtime_dir, os.W_OK) else os.environ.get("TMPDIR", "/tmp")
    return os.path.join(base, f"pycluster-{os.getuid()}-{port}.sock")


@dataclass(frozen=True)
class Config:
    """Everything the arbiter needs, already validated."""

    app_module: str
    workers: int
    bind: str
    policy: str
    graceful_timeout: float
    log_format: str = "text"
    worker_timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_memory: int = 0
    control_socket: str = ""
    metrics_bind: str | None = "127.0.0.1:9100"
    backlog: int = 2048
    embedded_redis: str = "auto"
    redis_data_dir: str = "var/redis"
    access_log: bool = False
    retry_idempotent: bool = True
    batch_scheduling: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)


# (flag, env twin, type, default, help). One table: the parser, the env lookup and the
# README's table all come from it.
OPTIONS: list[tuple[str, str, Any, Any, str]] = [
    ("--workers", "WORKERS", int, None, "number of worker processes (default: CPUs available to the process)"),
    ("--bind", "BIND", str, "0.0.0.0:8000", "HOST:PORT to listen on; PORT overrides the port"),
    ("--policy", "CLUSTER_SCHED_POLICY", str, "rr", f"scheduling policy: {' | '.join(POLICIES)}"),
    ("--graceful-timeout", "GRACEFUL_TIMEOUT", float, 10.0, "seconds a worker gets to drain before SIGKILL"),
    ("--log-format", "LOG_FORMAT", str, "text", "log format: text | json"),
    ("--worker-timeout", "WORKER_TIMEOUT", float, 30.0, "seconds without a heartbeat before a worker is killed (0: off)"),
    ("--max-requests", "MAX_REQUESTS", int, 0, "recycle a worker after this many requests (0: off)"),
    ("--max-requests-jitter", "MAX_REQUESTS_JITTER", int, 0, "random extra requests per worker, so they do not recycle together"),
    ("--max-memory", "MAX_MEMORY", str, "0", "recycle a worker whose RSS exceeds this, e.g. 512M (0: off)"),
    ("--control-socket", "CONTROL_SOCKET", str, None, "control socket path (default: $XDG_RUNTIME_DIR or /tmp, per user and port)"),
    ("--metrics-bind", "METRICS_BIND", str, "127.0.0.1:9100", "HOST:PORT for Prometheus metrics, or 'none'"),
    ("--backlog", "BACKLOG", int, 2048, "listen backlog"),
    ("--embedded-redis", "EMBEDDED_REDIS", str, "auto", "auto: start a Redis when REDIS_URL is unset | off"),
    ("--redis-data-dir", "REDIS_DATA_DIR", str, "var/redis", "data directory of the embedded Redis (AOF)"),
    ("--access-log", "ACCESS_LOG", str, "0", "log every request from the workers (1/0)"),
    ("--retry-idempotent", "RETRY_IDEMPOTENT", str, "1",
     "rr: give an idempotent request a SIGKILLed worker was serving to another worker, once (1/0)"),
    ("--batch-scheduling", "BATCH_SCHEDULING", str, "1",
     "Linux: run the master (not its workers) as SCHED_BATCH, so it hands connections over in batches (1/0)"),
]
SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump, exit 2
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """The `python -m master` argument parser (every flag names its environment twin)."""
    parser = _Parser(
        prog="python -m master",
        description="Run a WSGI app on a cluster of workers sharing one port (Node's cluster module, for Python). "
                    "Every flag has an environment twin; flags win over the environment. "
                    "`python -m master ctl --help` controls a running master.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app_module", nargs="?", metavar="APP_MODULE",
                        help="module:attribute of a WSGI app, e.g. app.wsgi:app (env APP_MODULE)")
    for flag, env, _kind, default, text in OPTIONS:
        shown = "CPUs" if flag == "--workers" else default
        shown = "per user and port" if flag == "--control-socket" else shown
        parser.add_argument(flag, dest=flag[2:].replace("-", "_"), default=None,
                            help=f"{text} [env {env}; default {shown}]")
    return parser


def _read(args: argparse.Namespace, environ: dict[str, str], flag: str, env: str, kind: Any, default: Any) -> Any:
    raw = getattr(args, flag[2:].replace("-", "_"))
    source = flag
    if raw is None and environ.get(env, "") != "":
        raw, source = environ[env], env
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        expected = {int: "a whole number", float: "a number"}.get(kind, "a value")
        raise ConfigError(f"invalid {source} {raw!r}: expected {expected}") from None


def load_config(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Parse flags and environment into a validated Config (ConfigError on bad input)."""
    environ = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    values = {flag: _read(args, environ, flag, env, kind, default) for flag, env, kind, default, _ in OPTIONS}

    app_module = args.app_module or environ.get("APP_MODULE", "")
    if not app_module:
        raise ConfigError("missing APP_MODULE: give module:attribute of a WSGI app, e.g. `python -m master app.wsgi:app`")
    if not APP_SPEC.match(app_module):
        raise ConfigError(f"invalid APP_MODULE {app_module!r}: expected module:attribute, e.g. app.wsgi:app")

    workers = values["--workers"] if values["--workers"] is not None else available_cpus()
    if workers < 1:
        raise ConfigError(f"invalid --workers {workers}: need at least 1")
    bind = values["--bind"]
    from .primary import parse_bind

    try:
        host, port = parse_bind(bind)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.bind is None and environ.get("PORT"):
        try:
            host, port = parse_bind(f"{host}:{environ['PORT']}")
        except ValueError:
            raise ConfigError(f"invalid PORT {environ['PORT']!r}: expected a port number 0..65535") from None
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        policy = normalize_policy(values["--policy"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for flag in ("--graceful-timeout", "--worker-timeout"):
        if values[flag] < 0 or math.isnan(values[flag]):
            raise ConfigError(f"invalid {flag} {values[flag]}: must be 0 or more seconds")
    for flag in ("--max-requests", "--max-requests-jitter", "--backlog"):
        if values[flag] < 0:
            raise ConfigError(f"invalid {flag} {values[flag]}: must be 0 or more")
    log_format = values["--log-format"].lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"invalid --log-format {values['--log-format']!r}: expected text or json")
    metrics_bind = values["--metrics-bind"]
    if metrics_bind.lower() in ("none", "off", ""):
        metrics_bind = None
    else:
        try:
            parse_bind(metrics_bind)
        except ValueError as exc:
            raise ConfigError(f"invalid --metrics-bind: {exc}") from None
    embedded = values["--embedded-redis"].lower()
    if embedded not in ("auto", "off"):
        raise ConfigError(f"invalid --embedded-redis {embedded!r}: expected auto or off")
    return Config(
        app_module=app_module,
        workers=workers,
        bind=bind,
        policy=policy,
        graceful_timeout=values["--graceful-timeout"],
        log_format=log_format,
        worker_timeout=values["--worker-timeout"],
        max_requests=values["--max-requests"],
        max_requests_jitter=values["--max-requests-jitter"],
        max_memory=parse_size(values["--max-memory"]),
        control_socket=values["--control-socket"] or "",
        metrics_bind=metrics_bind,
        backlog=values["--backlog"] or 2048,
        embedded_redis=embedded,
        redis_data_dir=values["--redis-data-dir"],
        access_log=parse_switch("--access-log", values["--access-log"]),
        retry_idempotent=parse_switch("--retry-idempotent", values["--retry-idempotent"]),
        batch_scheduling=parse_switch("--batch-scheduling", values["--batch-scheduling"]),
    )


def parse_switch(flag: str, raw: str) -> bool:
    """1/0, true/false, yes/no, on/off (any case); anything else is a ConfigError."""
    value = SWITCH_VALUES.get(str(raw).strip().lower())
    if value is None:
        raise ConfigError(f"invalid {flag} {raw!r}: expected 1 or 0 (or true/false, yes/no, on/off)")
    return value
