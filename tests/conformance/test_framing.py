"""Ambiguous or malformed framing is refused outright, with a clear status, and the connection closes."""
import pytest

from conformance.client import Client, request

# (case, bytes, status): every one of these must be refused, never guessed at.
REFUSED = [
    ("Content-Length and Transfer-Encoding", request("POST", "/echo", ("Content-Length: 5",
                                                                          "Transfer-Encoding: chunked"), b"0\r\n\r\n"), 400),
    ("Transfer-Encoding and Content-Length", request("POST", "/echo", ("Transfer-Encoding: chunked",
                                                                          "Content-Length: 5"), b"0\r\n\r\n"), 400),
    ("two equal Content-Lengths", request("POST", "/echo", ("Content-Length: 3", "Content-Length: 3"), b"abc"), 400),
    ("two different Content-Lengths", request("POST", "/echo", ("Content-Length: 3", "Content-Length: 4"), b"abcd"),
     400),
    ("Content-Length 1e3", request("POST", "/echo", ("Content-Length: 1e3",)), 400),
    ("Content-Length -1", request("POST", "/echo", ("Content-Length: -1",)), 400),
    ("Content-Length list", request("POST", "/echo", ("Content-Length: 3, 3",), b"abc"), 400),
    ("Content-Length past 2^64", request("POST", "/echo", ("Content-Length: 99999999999999999999999",)), 413),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: t\n\n", 400),
    ("bare LF in the head", b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400),
    ("bare CR in the head", b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n", 400),
    ("space before the colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    ("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("no Host in HTTP/1.1", request(host=None), 400),
    ("Transfer-Encoding in HTTP/1.0", request("POST", "/echo", ("Transfer-Encoding: chunked",), b"0\r\n\r\n",
                                              version="HTTP/1.0"), 400),
    ("a coding other than chunked", request("POST", "/echo", ("Transfer-Encoding: gzip, chunked",), b"0\r\n\r\n"),
     400),
    ("chunked not last", request("POST", "/echo", ("Transfer-Encoding: chunked, gzip",), b"0\r\n\r\n"), 400),
    ("invalid chunk size", request("POST", "/echo", ("Transfer-Encoding: chunked",), b"3x\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk without its CRLF", request("POST", "/echo", ("Transfer-Encoding: chunked",), b"3\r\nabcX0\r\n\r\n"), 400),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
    ("HTTP/1.2", request(version="HTTP/1.2"), 505),
    ("HTTP/2.0 over HTTP/1 framing", request(version="HTTP/2.0"), 505),
    ("lower-case method", b"get / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("space inside the target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
]

# What pywsgi lets through (docs/HTTP.md lists them): these cases are expected to fail on it.
PYWSGI_GAPS = {
    "two equal Content-Lengths": "serves it (200)",
    "obs-fold": "serves it (200)",
    "bare LF line ends": "serves it (200)",
    "bare LF in the head": "serves it (200)",
    "bare CR in the head": "serves it (200)",
    "space before the colon": "serves it (200)",
    "two Host fields": "serves it (200)",
    "no Host in HTTP/1.1": "serves it (200)",
    "Transfer-Encoding in HTTP/1.0": "serves it (200)",
    "NUL in a header value": "serves it (200)",
    "HTTP/1.2": "serves it (200)",
    "HTTP/2.0 over HTTP/1 framing": "answers 400, not 505",
    "lower-case method": "serves it (200) as method 'get'",
}


@pytest.mark.parametrize("case,data,status", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_then_closed(served, pywsgi_gap, case, data, status):
    if case in PYWSGI_GAPS:
        pywsgi_gap(PYWSGI_GAPS[case])
    client = Client(served.port)
    try:
        client.send(data)
        answer = client.response(timeout=3)
        assert answer is not None, "no answer"
        assert answer.status == status, (answer.status, answer.body)
        assert answer.header("connection") == "close"
        assert client.closed(), "the connection stayed open after refusing the request"
    finally:
        client.close()


def test_data_after_a_refused_request_is_never_served(served):
    hidden = request("GET", "/hidden")
    client = Client(served.port)
    try:
        client.send(request("POST", "/echo", ("Content-Length: 5", "Transfer-Encoding: chunked"), b"0\r\n\r\n") + hidden)
        answers = client.responses(2, timeout=2)
        assert [a.status for a in answers] == [400]
    finally:
        client.close()


def test_a_valid_request_before_a_malformed_one_is_answered_first(served):
    client = Client(served.port)
    try:
        client.send(request("GET", "/first") + b"GARBAGE\r\n\r\n")
        answers = client.responses(2, timeout=3)
        assert answers[0].status == 200 and answers[0].body == b"GET /first"
        assert len(answers) == 2 and answers[1].status == 400
        assert client.closed()
    finally:
        client.close()


def test_an_absolute_form_target_is_served_as_its_path(served, pywsgi_gap):
    pywsgi_gap("PATH_INFO is the whole absolute URL")
    client = Client(served.port)
    try:
        answer = client.send(request("GET", "http://t/abs?q=1")).response()
        assert answer.status == 200 and answer.body == b"GET /abs?q=1"
    finally:
        client.close()


def test_a_percent_encoded_path_is_decoded(served):
    client = Client(served.port)
    try:
        answer = client.send(request("GET", "/a%20b?x=%20")).response()
        assert answer.body == b"GET /a b?x=%20"
    finally:
        client.close()


def test_an_app_that_swallows_a_body_error_gets_one_answer_then_the_close(served, pywsgi_gap):
    pywsgi_gap("answers twice: the app's 200, then a 400 for the same request")
    client = Client(served.port)
    try:
        client.send(request("POST", "/swallow", ("Transfer-Encoding: chunked",), b"3\r\nabc\r\nZZ\r\n"))
        answers = client.responses(2, timeout=3)
        assert [a.body for a in answers] == [b"swallowed"]
        assert client.closed()
    finally:
        client.close()
