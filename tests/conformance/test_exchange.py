"""Keep-alive, pipelining, chunked bodies both ways, HEAD, Expect: 100-continue."""
import time

import pytest

from conformance.client import Client, request


@pytest.fixture
def client(served):
    c = Client(served.port)
    yield c
    c.close()


def test_keep_alive_serves_requests_on_one_connection(client):
    pids = set()
    for i in range(5):
        answer = client.send(request("GET", f"/n{i}")).response()
        assert answer.status == 200 and answer.body == f"GET /n{i}".encode()
        assert answer.header("connection") in (None, "keep-alive")
        pids.add(answer.header("x-worker-pid"))
    assert len(pids) == 1


def test_connection_close_from_the_client_is_honoured(client):
    answer = client.send(request(headers=("Connection: close",))).response()
    assert answer.status == 200 and answer.header("connection") == "close"
    assert client.closed()


def test_http10_closes_unless_asked_to_keep_alive(served):
    plain = Client(served.port)
    try:
        assert plain.send(request(version="HTTP/1.0", host=None)).response().status == 200
        assert plain.closed()
    finally:
        plain.close()
    kept = Client(served.port)
    try:
        for _ in range(2):
            answer = kept.send(request(version="HTTP/1.0", headers=("Connection: keep-alive",))).response()
            assert answer.status == 200 and answer.header("connection") == "keep-alive"
    finally:
        kept.close()


def test_pipelined_requests_are_answered_in_order(client):
    body = b"posted"
    client.send(request("GET", "/one") + request("POST", "/echo", (f"Content-Length: {len(body)}",), body)
                + request("GET", "/three") + request("GET", "/four?q=4") + request("GET", "/five"))
    answers = client.responses(5)
    assert [a.body for a in answers] == [b"GET /one", body, b"GET /three", b"GET /four?q=4", b"GET /five"]


def test_a_chunked_request_body_is_read_whole(client):
    body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n"
    answer = client.send(request("POST", "/echo", ("Transfer-Encoding: chunked",), body)).response()
    assert answer.status == 200 and answer.body == b"Wikipedia in \r\n\r\nchunks."


def test_a_chunked_body_reads_by_lines(client):
    body = b"6\r\na\nb\nc\n\r\n2\r\nd\n\r\n0\r\n\r\n"
    answer = client.send(request("POST", "/lines", ("Transfer-Encoding: chunked",), body)).response()
    assert answer.body == b"a\n|b\n|c\n|d\n"


def test_a_body_of_unknown_length_is_sent_chunked(client):
    answer = client.send(request("GET", "/stream")).response()
    assert answer.header("transfer-encoding") == "chunked" and answer.header("content-length") is None
    assert answer.body == b"first,second,third"
    assert client.send(request("GET", "/after")).response().body == b"GET /after"  # framing held


def test_a_body_of_unknown_length_to_http10_ends_with_the_connection(served):
    client = Client(served.port)
    try:
        client.send(request("GET", "/stream", version="HTTP/1.0"))
        raw = client.raw(timeout=3)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"chunked" not in head.lower() and body == b"first,second,third"
        assert client.eof
    finally:
        client.close()


def test_head_sends_the_headers_and_no_body(client, pywsgi_gap):
    pywsgi_gap("sends the body a raw WSGI app returns for HEAD (Flask returns none for HEAD itself)")
    client.send(request("HEAD", "/x") + request("GET", "/after"))
    raw = client.raw(timeout=1.5)
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep and b"content-length: 7" in head.lower()  # what GET /x would have sent: "HEAD /x"
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"GET /after")


def test_expect_100_continue_gets_100_before_the_body(client):
    body = b"expected body"
    client.send(request("POST", "/echo", ("Expect: 100-continue", f"Content-Length: {len(body)}")))
    interim = client.sock.recv(100)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    answer = client.send(body).response()
    assert answer.status == 200 and answer.body == body


def test_expect_100_continue_with_a_body_too_large_gets_413_and_no_100(served, client):
    client.send(request("POST", "/echo", ("Expect: 100-continue", "Content-Length: 10000000")))
    answer = client.response()
    assert answer.status == 413
    assert client.closed()


def test_an_unknown_expectation_is_417(client, pywsgi_gap):
    pywsgi_gap("ignores the expectation and serves the request")
    client.send(request("POST", "/echo", ("Expect: something-else", "Content-Length: 0")))
    assert client.response().status == 417


def test_a_body_the_app_does_not_read_is_skipped_and_the_connection_goes_on(client):
    body = b"z" * 5000
    client.send(request("POST", "/ignored", (f"Content-Length: {len(body)}",), body) + request("GET", "/next"))
    answers = client.responses(2)
    assert [a.body for a in answers] == [b"POST /ignored", b"GET /next"]


def test_an_app_that_waits_yields_to_the_other_connections(served):
    # /slow sleeps through gevent (as a Redis call waits): its worker serves others meanwhile.
    slow, quick, others = Client(served.port), None, []
    try:
        pid = slow.send(request()).response().header("x-worker-pid")
        for _ in range(20):  # a connection on the same worker
            candidate = Client(served.port)
            if candidate.send(request()).response().header("x-worker-pid") == pid:
                quick = candidate
                break
            others.append(candidate)
        assert quick is not None, "no second connection landed on the same worker"
        slow.send(request("GET", "/slow?s=2"))
        started = time.monotonic()
        for i in range(5):
            assert quick.send(request("GET", f"/quick{i}")).response(timeout=1.5).status == 200
        assert time.monotonic() - started < 1.5
        assert slow.response(timeout=5).body == b"GET /slow?s=2"
    finally:
        for c in [slow, quick, *others]:
            if c is not None:
                c.close()


PEP_3333_KEYS = {"REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
                 "SERVER_PROTOCOL", "wsgi.version", "wsgi.url_scheme", "wsgi.input", "wsgi.errors",
                 "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"}


def test_the_environ_carries_what_pep_3333_and_pycluster_promise(client):
    lines = client.send(request("GET", "/environ?a=1")).response().body.decode().splitlines()
    keys = {line for line in lines if "=" not in line}
    assert PEP_3333_KEYS | {"REMOTE_ADDR", "REMOTE_PORT", "GATEWAY_INTERFACE", "wsgi.input_terminated",
                            "pycluster.no_retry"} <= keys
    assert {"REQUEST_METHOD=GET", "PATH_INFO=/environ", "QUERY_STRING=a=1", "SERVER_PROTOCOL=HTTP/1.1"} <= set(lines)
