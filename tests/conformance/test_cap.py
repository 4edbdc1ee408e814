"""The cap on connections per worker (--worker-connections): past it, new connections wait (in the
kernel's queue, or in the rr lane) and are served once a connection ends; none is accepted and dropped."""
import pytest

from conformance.client import Client
from conformance.client import request as http_request
from conformance.conftest import ENGINES, start_master
from support import wait_for

CAP = 3


@pytest.fixture(scope="module", params=[(e, p) for e in ENGINES for p in ("rr", "shared")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def capped(request, tmp_path_factory):
    engine, policy = request.param
    master = start_master(tmp_path_factory.mktemp(f"cap-{engine}-{policy}"), engine, "--policy", policy,
                          "--worker-connections", str(CAP), "--keepalive-timeout", "30", "--header-timeout", "30",
                          workers=1)
    try:
        yield engine, master
    finally:
        master.kill_all()


def test_past_the_cap_a_connection_waits_and_is_served_when_one_ends(capped, request):
    engine, master = capped
    # Each in the middle of its head: counted, and never given back to the primary as idle ones may be.
    held = [Client(master.port).send(b"GET /held HTTP/1.1\r\nHost: t\r\nX-Partial: ") for _ in range(CAP)]
    waiting = None
    try:
        assert wait_for(lambda: sum(w["connections"] for w in master.status()["workers"]) >= CAP, 10,
                        what=f"{CAP} connections open in the worker")
        waiting = Client(master.port).send(http_request("GET", "/waited"))
        assert waiting.response(timeout=1.0) is None, "served past the cap"
        assert not waiting.eof, "accepted and dropped"
        held.pop().close()
        answer = waiting.response(timeout=5)
        assert answer is not None and answer.body == b"GET /waited"
    finally:
        for client in held + ([waiting] if waiting else []):
            client.close()


def test_the_cap_counts_open_connections_not_requests(capped):
    _, master = capped
    client = Client(master.port)
    try:
        for i in range(CAP * 3):
            assert client.send(http_request("GET", f"/{i}")).response().body == f"GET /{i}".encode()
    finally:
        client.close()
