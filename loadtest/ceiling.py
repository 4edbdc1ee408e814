"""Flask's in-process ceiling: the WSGI app called in a loop with no socket, in requests per CPU second.

No server can beat this per core, so it is the limit the benchmark holds `/` and `/work` against.
Run in its own process (`python -m loadtest.ceiling --path /work`) so the app's imports, its Redis
client and any gevent patching stay out of the benchmark driver.
"""

import argparse
import importlib
import io
import json
import sys
import time


def load_app(spec: str):
    """The WSGI callable named by 'module:attribute'."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "app")


def environ_for(path: str) -> dict:
    """A minimal GET environ, as a server would build it."""
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def measure(app, path: str, seconds: float, max_calls: int) -> dict:
    """Call the app until the time or the count runs out; calls per wall and per CPU second."""
    base = environ_for(path)
    statuses = {}

    def start_response(status, headers, exc_info=None):
        statuses[status] = statuses.get(status, 0) + 1

    for _ in range(50):  # warm-up: first-request costs (imports, Redis connect) are not the ceiling
        body = app({**base, "wsgi.input": io.BytesIO()}, start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()
    statuses.clear()
    calls = 0
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    deadline = wall0 + seconds
    while calls < max_calls and time.perf_counter() < deadline:
        body = app({**base, "wsgi.input": io.BytesIO()}, start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()
        calls += 1
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    return {
        "endpoint": path, "calls": calls, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "rps_wall": round(calls / wall, 1) if wall else None,
        # Per CPU second: the other developers' processes on this machine must not lower the ceiling.
        "rps_per_core": round(calls / cpu, 1) if cpu else None,
        "statuses": statuses,
    }


def main(argv=None) -> int:
    """Print one JSON object per --path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="app.wsgi:app")
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-calls", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    app = load_app(args.app)
    for path in args.path or ["/"]:
        print(json.dumps(measure(app, path, args.seconds, args.max_calls)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
