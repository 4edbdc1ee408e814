"""--access-log 1: one line per request, naming the method, the target and the status."""
import pytest

from conformance.client import Client, request
from conformance.conftest import ENGINES, start_master
from support import wait_for


@pytest.fixture(scope="module", params=ENGINES)
def logged(request, tmp_path_factory):
    master = start_master(tmp_path_factory.mktemp(f"log-{request.param}"), request.param, "--access-log", "1")
    try:
        yield master
    finally:
        master.kill_all()


def test_each_request_gets_a_line(logged):
    client = Client(logged.port)
    try:
        assert client.send(request("GET", "/logged?x=1")).response().status == 200
        assert client.send(request("GET", "/missing-status")).response().status == 200
    finally:
        client.close()
    line = wait_for(lambda: next((l for l in logged.log().splitlines() if "/logged?x=1" in l), None), 5,
                    what="an access log line")
    assert '"GET /logged?x=1 HTTP/1.1" 200' in line and line.startswith("127.0.0.1")


def test_no_line_without_the_flag(served):
    client = Client(served.port)
    try:
        client.send(request("GET", "/unlogged")).response()
    finally:
        client.close()
    assert "/unlogged" not in served.master.log()
