"""A tiny WSGI app for the master's tests: no Redis, endpoints that sleep, spin or crash."""
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    """/ -> pid; /sleep?s=[&no_retry=1] -> cooperative wait; /spin?s= -> CPU busy loop; /exit -> os._exit(1); /peer; /big?n= -> n bytes."""
    path = environ.get("PATH_INFO", "/")
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/sleep":
        if query.get("no_retry"):
            environ["pycluster.no_retry"]()  # as a handler with side effects would
        time.sleep(float(query.get("s", "1")))  # gevent-patched: the worker stays responsive
    elif path == "/spin":
        end = time.monotonic() + float(query.get("s", "1"))
        while time.monotonic() < end:
            pass
    elif path == "/exit":
        os._exit(1)
    body = f"Hello from worker {os.getpid()}\n".encode()
    if path == "/peer":
        body = f"{environ['REMOTE_ADDR']}:{environ['REMOTE_PORT']}".encode()
    elif path == "/big":
        body = b"x" * int(query.get("n", "200000"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]
