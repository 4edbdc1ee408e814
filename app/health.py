"""GET /health: this worker's vital signs and whether Redis answers."""

import os
import resource
import time

from flask import Blueprint, current_app

from .store import get_store

bp = Blueprint("health", __name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes():
    """Return the resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        # No /proc (macOS): peak RSS is the best the stdlib offers, in bytes there.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@bp.get("/health")
def health():
    """Report status, pid, memory, uptime and Redis; 503 while Redis does not answer."""
    redis_ok = get_store().ping()
    body = {
        "status": "ok" if redis_ok else "degraded",
        "pid": os.getpid(),
        "memory": rss_bytes(),
        "uptime": round(time.monotonic() - current_app.extensions["pycluster.started"], 3),
        "redis": "ok" if redis_ok else "down",
    }
    return body, 200 if redis_ok else 503


def init_app(app):
    """Register the health route."""
    app.register_blueprint(bp)
