"""`pycluster APP` (or `python -m master APP`): parse flags and env, run the supervisor, exit with its status.

`pycluster ctl ...` talks to a running master through its control socket.
"""
from __future__ import annotations

import sys

from . import __version__
from .core.exitcodes import MASTER_CONFIG_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "ctl":
        from .supervisor.ctl import ctl_main

        return ctl_main(argv[1:])
    from .supervisor.config import ConfigError, load_config, wants_version

    if wants_version(argv):
        print(f"pycluster {__version__}")
        return 0
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"pycluster: error: {exc}", file=sys.stderr)
        return MASTER_CONFIG_ERROR
    from .supervisor.main import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
