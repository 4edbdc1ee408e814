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


def burn_cpu(ms):
    """Spin until this request has used ms milliseconds of CPU."""
    # thread_time, not process_time: with greenlets or threads, process time also counts the CPU
    # of every other request. And counted in small steps, because with greenlets other requests can
    # run on this very thread between two steps (gevent at a wait, pycluster's time slices
    # anywhere) and advance its clock: a step far longer than the usual one is counted as usual.
    budget, used, usual, x = ms / 1000.0, 0.0, 0.0, 0
    last = time.thread_time()
    while used < budget:
        for i in range(200):
            x += i * i
        now = time.thread_time()
        step, last = now - last, now
        if usual and step > 20 * usual:
            step = usual  # someone else ran in between
        else:
            usual = step if not usual else 0.9 * usual + 0.1 * step
        used += step
    return x


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
