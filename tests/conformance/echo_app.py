"""The app the conformance suite serves: each path shows one behaviour of the engine under it."""
import os
import time


def _reply(start_response, body, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            ("X-Worker-Pid", str(os.getpid())), *extra])
    return [body]


def _stream(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])  # no length: the engine frames it
    yield b"first,"
    yield b""
    yield b"second,"
    yield b"third"


def app(environ, start_response):
    """/echo: the body back; /lines: its lines; /swallow: read, catching any error; /stream: a body of
    unknown length; /slow?s=: answer late; anything else: the method and target back."""
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return _reply(start_response, body, extra=[("X-Seen-Length", environ.get("CONTENT_LENGTH", ""))])
    if path == "/swallow":  # an app that catches everything, even the engine's errors
        try:
            environ["wsgi.input"].read()
        except BaseException:  # noqa: BLE001 - the point of this path
            return _reply(start_response, b"swallowed")
        return _reply(start_response, b"read")
    if path == "/environ":  # the keys every request's environ carries, and a few values
        keys = sorted(k for k in environ if not k.startswith("HTTP_"))
        values = [f"{k}={environ[k]}" for k in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL")]
        return _reply(start_response, "\n".join(keys + values).encode())
    if path == "/lines":
        return _reply(start_response, b"|".join(environ["wsgi.input"]))
    if path == "/stream":
        return _stream(start_response)
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING", "s=1").partition("=")[2] or 1))
    query = environ.get("QUERY_STRING")
    target = environ["PATH_INFO"] + ("?" + query if query else "")
    return _reply(start_response, f"{environ['REQUEST_METHOD']} {target}".encode())
