"""A tiny WSGI app for the master's tests: no Redis, endpoints that sleep, spin or crash."""
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    """/ -> pid; /sleep?s=[&no_retry=1] -> cooperative wait; /spin?s= -> CPU busy loop; /exit -> os._exit(1); /peer; /big?n= -> n bytes;
    /echo -> the body's length, read to the end; /hog?s= -> hold every free descriptor for s seconds."""
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
    elif path == "/hog":
        _hog(float(query.get("s", "1")))
    body = f"Hello from worker {os.getpid()}\n".encode()
    if path == "/peer":
        body = f"{environ['REMOTE_ADDR']}:{environ['REMOTE_PORT']}".encode()
    elif path == "/big":
        body = b"x" * int(query.get("n", "200000"))
    elif path == "/echo":
        body = str(len(environ["wsgi.input"].read())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]


def _hog(seconds):
    """Take every descriptor the process may still open, hold them, then give them back."""
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    try:
        time.sleep(seconds)
    finally:
        for fd in held:
            os.close(fd)
