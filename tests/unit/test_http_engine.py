"""The httptools engine's response heads (master/worker/http/response.py) and request parsing (parse.py)."""
import pytest

from master.worker.http.limits import Limits
from master.worker.http.parse import RequestParser
from master.worker.http.response import finish_head, head_lines


def test_the_app_headers_pass_through_and_hop_by_hop_ones_do_not():
    lines, length, close, chunked = head_lines("200 OK", [("Content-Length", "5"), ("Connection", "close"),
                                                          ("Keep-Alive", "timeout=5"), ("X-A", "b"),
                                                          ("transfer-encoding", "chunked")])
    head = finish_head(lines).decode()
    assert head.startswith("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nDate: ") and head.endswith("\r\n\r\n")
    assert (length, close, chunked) == ("5", True, True)
    assert "Keep-Alive" not in head and "Connection" not in head and "transfer" not in head.lower()


@pytest.mark.parametrize("status,headers", [("200 OK", [("X-A", "b\r\nSet-Cookie: evil=1")]),
                                            ("200 OK", [("X-A", "b\rinjected")]),
                                            ("200 OK\r\nX-Evil: 1", []),
                                            ("200 OK", [("X-A\nB", "c")])])
def test_a_cr_or_lf_inside_the_head_is_refused(status, headers):
    lines, *_ = head_lines(status, headers)
    with pytest.raises(ValueError):
        finish_head(lines)


def _parser():
    return RequestParser({"SERVER_PROTOCOL": "HTTP/1.1", "QUERY_STRING": ""}, Limits(), lambda req: "body")


def test_pipelined_requests_queue_in_order_with_their_bodies():
    parser = _parser()
    parser.feed(b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    first, second = parser.ready
    assert first.environ["PATH_INFO"] == "/a" and first.environ["QUERY_STRING"] == "x=1"
    assert bytes(first.body) == b"abc" and first.complete and first.environ["wsgi.input"] == "body"
    assert second.environ["REQUEST_METHOD"] == "GET" and second.complete and second.keep_alive


def test_header_names_with_underscores_are_dropped_and_repeats_joined():
    parser = _parser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nAccept: a\r\nAccept: b\r\n\r\n")
    environ = parser.ready[0].environ
    assert "HTTP_X_FORWARDED_FOR" not in environ and environ["HTTP_ACCEPT"] == "a,b"


def test_the_first_error_stops_the_parser_after_the_requests_before_it():
    parser = _parser()
    parser.feed(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /never HTTP/1.1\r\n")
    assert [r.environ["PATH_INFO"] for r in parser.ready] == ["/ok"]
    assert parser.stopped and parser.error == 400 and "Host" in parser.reason


def test_an_unfinished_head_is_refused_once_past_its_limit_plus_one_read():
    parser = RequestParser({"SERVER_PROTOCOL": "HTTP/1.1"}, Limits(header_bytes=1000), lambda req: None)
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ")
    while not parser.stopped:
        parser.feed(b"v" * 8192)
    assert parser.error == 431
