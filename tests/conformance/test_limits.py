"""Limits on the request line (414), the header block (431) and the body (413), each then closing."""
import time

from conformance.client import Client, request
from conformance.conftest import MAX_BODY


def _refused(port, data, status, send_all=True):
    client = Client(port)
    try:
        client.send(data)
        answer = client.response(timeout=5)
        assert answer is not None and answer.status == status, answer
        assert answer.header("connection") == "close"
        assert client.closed(), "the connection stayed open"
    finally:
        client.close()


def test_a_request_line_past_the_limit_is_414(served):
    _refused(served.port, request("GET", "/" + "a" * 8200), 414)


def test_a_request_line_within_the_limit_is_served(served):
    client = Client(served.port)
    try:
        answer = client.send(request("GET", "/" + "a" * 8000)).response()
        assert answer.status == 200 and len(answer.body) == len("GET /") + 8000
    finally:
        client.close()


def test_too_many_header_fields_is_431(served):
    _refused(served.port, request(headers=tuple(f"X-F{i}: v" for i in range(101))), 431)


def test_a_header_block_past_64k_is_431(served):
    _refused(served.port, request(headers=tuple(f"X-F{i}: {'v' * 1000}" for i in range(70))), 431)


def test_an_endless_header_is_refused_before_it_ends(served):
    # 5 MB of one header value, never finished: the answer comes long before the client is done.
    client = Client(served.port)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ")
        sent, answer = 0, None
        while sent < 5_000_000 and answer is None:
            try:
                client.send(b"v" * 65536)
            except OSError:
                break  # closed after answering: read the answer below
            sent += 65536
            answer = client.response(timeout=0.01)
        answer = answer or client.response(timeout=3)
        assert answer is not None and answer.status == 431
        assert sent < 1_000_000
    finally:
        client.close()


def test_a_declared_body_past_the_limit_is_413_at_once(served):
    _refused(served.port, request("POST", "/echo", (f"Content-Length: {MAX_BODY + 1}",)), 413)


def test_a_chunked_body_past_the_limit_is_413(served):
    body = b"".join(b"%x\r\n%s\r\n" % (10_000, b"x" * 10_000) for _ in range(MAX_BODY // 10_000 + 2)) + b"0\r\n\r\n"
    _refused(served.port, request("POST", "/echo", ("Transfer-Encoding: chunked",), body), 413)


def test_a_body_within_the_limit_is_served(served):
    client = Client(served.port)
    try:
        body = b"y" * MAX_BODY
        answer = client.send(request("POST", "/echo", (f"Content-Length: {len(body)}",), body)).response()
        assert answer.status == 200 and answer.body == body
    finally:
        client.close()


def test_a_content_length_of_1e30_is_refused_not_left_open(served):
    start = time.monotonic()
    _refused(served.port, request("POST", "/echo", ("Content-Length: 1e30",)), 400)
    assert time.monotonic() - start < 2
