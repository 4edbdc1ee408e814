"""The httptools engine acts on the balancer's verdict at each keep-alive boundary (master/worker/balance.py)."""
import subprocess
import sys

import pytest

from conformance.client import Client, request
from support import ROOT, free_port


@pytest.fixture
def hooked():
    procs = []

    def start(verdicts: str, take: bool = True):
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "conformance" / "hook_server.py"), str(port),
                                 verdicts, "1" if take else "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return port, proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_close_says_so_and_ends_the_connection(hooked):
    port, _ = hooked("close")
    client = Client(port)
    answer = client.send(request("GET", "/a")).response()
    assert answer.body == b"/a" and answer.header("connection") == "close"
    assert client.closed()


def test_hand_back_sends_the_whole_answer_then_passes_the_live_connection_on(hooked):
    port, _ = hooked("hand-back")
    client = Client(port)
    answer = client.send(request("GET", "/a")).response()
    assert answer.body == b"/a" and answer.header("connection") is None  # the head is as for KEEP
    second = client.send(request("GET", "/b")).response()
    assert second.body == b"taken over\n"  # neither shut down nor closed: its next request reached the taker


def test_hand_back_keeps_serving_when_the_next_request_is_already_buffered(hooked):
    port, _ = hooked("hand-back")
    client = Client(port)
    answers = client.send(request("GET", "/a") + request("GET", "/b")).responses(2)
    assert [a.body for a in answers] == [b"/a", b"/b"]


def test_a_refused_hand_back_keeps_serving(hooked):
    port, _ = hooked("hand-back", take=False)
    client = Client(port)
    assert client.send(request("GET", "/a")).response().body == b"/a"
    assert client.send(request("GET", "/b")).response().body == b"/b"


def test_the_balancer_is_asked_only_where_the_connection_would_stay_open(hooked):
    port, proc = hooked("")
    client = Client(port)
    client.send(request("GET", "/a")).response()
    client.send(request("GET", "/b", ("Connection: close",))).response()
    assert client.closed()
    proc.kill()
    assert proc.stdout.read().split() == ["asked", "1"]
