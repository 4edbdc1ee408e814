"""The rr handoff lane on real sockets: records, the unread count, PING/PONG, and recovery."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from master.core import lane as wire
from master.scheduling.rr.lane import Lane


@pytest.fixture
def lane():
    """The primary's two ends of one lane; closed after the test."""
    lane = Lane()
    yield lane
    lane.close()


def test_records_carry_descriptors_and_peers_in_order():
    readers = []
    conns = []
    for peer in (("127.0.0.1", 50001), ("2001:db8::ffff:1", 65535), None):
        r, w = os.pipe()
        readers.append((r, w))
        conns.append((r, peer))
    data, ancdata = wire.encode(conns)
    assert len(data) == 3 * wire.LINE  # fixed width: FIONREAD / LINE counts connections
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        left.sendmsg([data], ancdata)
        received = wire.receive(right)
        assert [peer for _, peer in received] == [("127.0.0.1", 50001), ("2001:db8::ffff:1", 65535), None]
        for (fd, _), (_, w) in zip(received, readers):
            os.write(w, b"x")
            assert os.read(fd, 1) == b"x"  # a working duplicate of the pipe's read end
            os.close(fd)
    finally:
        for r, w in readers:
            os.close(r)
            os.close(w)
        left.close()
        right.close()


def test_the_unread_count_is_exact_and_ping_is_answered_in_order(tcp_pair, lane):
    listener, client = tcp_pair
    accepted = [listener._accept() for _ in range(1)]
    lane.send(accepted)
    lane.send([(os.dup(accepted[0][0]), ("127.0.0.1", 1)), (os.dup(accepted[0][0]), ("127.0.0.1", 2))])
    assert lane.unread == 3 and lane.refresh() == 3
    lane.ping()
    assert lane.refresh() == 3  # a PING is not a connection
    worker_end = lane.theirs
    first = wire.receive(worker_end)
    assert len(first) == 1 and lane.refresh() == 2
    second = wire.receive(worker_end)
    assert len(second) == 2 and lane.refresh() == 0
    assert wire.receive(worker_end) == wire.PING
    worker_end.send(wire.PONG)
    assert lane.returned() == ([], [], True) and not lane.pinged
    for fd, _ in accepted + first + second:
        os.close(fd)


def test_what_a_dead_worker_never_read_is_read_back_and_still_works(tcp_pair, lane):
    listener, client = tcp_pair
    fd, peer = listener._accept()
    lane.send([(fd, peer)])
    os.close(fd)  # the primary keeps no copy: the lane's record is the only one
    worker = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                              pass_fds=(lane.theirs.fileno(),))
    assert worker.wait(10) == -signal.SIGKILL
    [(recovered, recovered_peer)] = lane.unclaimed()
    assert recovered_peer == client.getsockname()
    os.write(recovered, b"still connected")
    assert client.recv(64) == b"still connected"
    os.close(recovered)


def test_a_draining_worker_sends_connections_back(tcp_pair, lane):
    listener, _client = tcp_pair
    conn = listener._accept()
    lane.send([conn])
    os.close(conn[0])
    [taken] = wire.receive(lane.theirs)
    wire.send(lane.theirs, [taken])  # what the worker's lane reader does while draining
    os.close(taken[0])
    returned, idle, pong = lane.returned()
    assert len(returned) == 1 and returned[0][1] == conn[1] and not pong and idle == []
    os.close(returned[0][0])


def test_a_worker_gives_an_idle_connection_back_marked_idle(tcp_pair, lane):
    listener, client = tcp_pair
    conn = listener._accept()
    lane.send([conn])
    os.close(conn[0])
    [taken] = wire.receive(lane.theirs)
    wire.send(lane.theirs, [taken], idle=True)  # balance: the worker gives it up between requests
    os.close(taken[0])
    refused, idle, _pong = lane.returned()
    assert refused == [] and [peer for _, peer in idle] == [conn[1]]
    os.write(idle[0][0], b"still the client's")
    assert client.recv(64) == b"still the client's"
    os.close(idle[0][0])
