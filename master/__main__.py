"""`python -m master APP_MODULE`: parse flags and env, run the arbiter, exit with its status.

`python -m master ctl ...` talks to a running master through its control socket.
"""
from __future__ import annotations

import logging
import os
import sys

from .config import ConfigError, load_config
from .logs import setup_logging

log = logging.getLogger("master")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "ctl":
        from .control import ctl_main

        return ctl_main(argv[1:])
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"python -m master: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_format)

    from .arbiter import Arbiter
    from .exitcodes import MASTER_NO_REDIS as EXIT_NO_REDIS
    from .control import ControlServer
    from .metrics import MetricsServer

    env: dict[str, str] = {}
    redis = None
    if not os.environ.get("REDIS_URL") and config.embedded_redis == "auto":
        from .embedded_redis import EmbeddedRedis, EmbeddedRedisError

        try:
            redis = EmbeddedRedis(config.redis_data_dir).start()
        except EmbeddedRedisError as exc:
            log.error("cannot start the embedded Redis: %s (set REDIS_URL, or --embedded-redis off)", exc)
            return EXIT_NO_REDIS
        env["REDIS_URL"] = redis.url
        log.info("Embedded Redis %s (pid %s, AOF in %s)", redis.url, redis.pid, redis.data_dir)
    arbiter = Arbiter(config, env=env)
    control = ControlServer(config.control_socket, arbiter)
    metrics = MetricsServer(config.metrics_bind, arbiter) if config.metrics_bind else None
    arbiter.add_startup(control.start)
    if metrics:
        arbiter.add_startup(metrics.start)
    try:
        return arbiter.run()
    finally:
        control.close()
        if metrics:
            metrics.close()
        if redis is not None:
            redis.stop()
            log.info("Embedded Redis stopped")


if __name__ == "__main__":
    sys.exit(main())
