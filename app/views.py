"""Stateless routes: a greeting and a CPU-bound request, plus the X-Worker-Pid header on every answer."""

import os
import re
import time

from flask import Blueprint, current_app, request

from .errors import json_error

bp = Blueprint("views", __name__)

MAX_WORK_MS = 1000
# ASCII digits only: int() would also accept " 5", "+5" or Arabic-Indic digits.
_MS_PATTERN = re.compile(r"[0-9]{1,4}")


@bp.get("/")
def hello():
    """Greet the caller with this worker's pid."""
    return f"Hello from worker {os.getpid()}", 200, {"Content-Type": "text/plain; charset=utf-8"}


def _spin(rounds):
    x = 0
    for _ in range(rounds):
        for i in range(200):
            x += i * i
    return x


def _rounds_per_ms(sample_ms=20.0):
    """How many rounds of _spin make a millisecond of this thread's CPU, measured once at import."""
    _spin(200)  # warm: the first rounds run slower than the rest
    rounds, start = 0, time.thread_time()
    while time.thread_time() - start < sample_ms / 1000.0:
        _spin(50)
        rounds += 50
    return max(1, round(rounds / ((time.thread_time() - start) * 1000.0)))


# A fixed amount of work per millisecond, not "spin until the clock says so": a server that
# interleaves requests in one thread (gevent at every wait, pycluster's time slices anywhere) runs
# other requests' CPU on this thread's clock, so a clock-bound loop would stop early there.
ROUNDS_PER_MS = _rounds_per_ms()


def burn_cpu(ms):
    """Do ms milliseconds' worth of CPU work (as measured when this module was imported)."""
    return _spin(ms * ROUNDS_PER_MS)


@bp.get("/work")
def work():
    """Burn ?ms=N (default WORK_MS) milliseconds of CPU, then answer with the pid."""
    raw = request.args.get("ms")
    if raw is None:
        ms = current_app.config["WORK_MS"]
    else:
        ms = int(raw) if _MS_PATTERN.fullmatch(raw) else 0
        if not 1 <= ms <= MAX_WORK_MS:
            return json_error(400, f"ms must be an integer from 1 to {MAX_WORK_MS}")
    burn_cpu(ms)
    return {"worker": os.getpid(), "ms": ms}


def add_worker_pid(response):
    """Tag every response, errors included, with the pid of the worker that served it."""
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


def init_app(app):
    """Register the stateless routes and the X-Worker-Pid header."""
    app.register_blueprint(bp)
    app.after_request(add_worker_pid)
