"""The rr handle with real sockets and lanes, workers played by the test (their lane ends in hand)."""
from __future__ import annotations

import os
import socket

import pytest

from master.core import lane as wire
from master.core.events import EventEmitter
from master.core.loop import EventLoop
from master.scheduling.rr.handle import RoundRobinHandle


class PlayedWorker(EventEmitter):
    def __init__(self, worker_id: int) -> None:
        super().__init__()
        self.id, self.pid, self.board = worker_id, 100000 + worker_id, None
        self.exited_after_disconnect, self.kill_reason = False, None
        self.lane: socket.socket | None = None

    def reply(self, fds=None, **fields) -> None:
        self.lane = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, socket.dup(fds[0]))
        self.lane.setblocking(False)


@pytest.fixture
def handle():
    loop = EventLoop()
    made = RoundRobinHandle("127.0.0.1", 0, loop, persistent=True)
    yield made
    made.close()
    loop.close()


def turn(handle, times=5):
    for _ in range(times):
        handle.loop.run_once(max_wait=0)


def connect(handle) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", handle.port))
    turn(handle)
    return client


def test_connections_alternate_between_equally_loaded_workers(handle):
    workers = [PlayedWorker(1), PlayedWorker(2)]
    for w in workers:
        handle.add(w, w.reply)
    clients = [connect(handle) for _ in range(4)]
    got = [len(wire.receive_all(w.lane)[0]) for w in workers]
    assert got == [2, 2]
    for c in clients:
        c.close()


def test_a_refusal_after_the_listener_closed_and_another_worker_died_is_served_or_closed(handle):
    first, second = PlayedWorker(1), PlayedWorker(2)
    for w in (first, second):
        handle.add(w, w.reply)
    client = connect(handle)
    handle.close()
    second.emit("exit", None, "SIGKILL")  # gone, and the closed handle is no longer told to remove it
    conns = wire.receive_all(first.lane)[0] + wire.receive_all(second.lane)[0]
    wire.send(first.lane, conns)  # the first worker, draining, sends everything back
    for fd, _peer in conns:
        os.close(fd)  # the worker's own copies: only the primary's remain
    turn(handle)  # must not raise: nobody is left to serve it, so it is closed, and the client sees the end
    client.settimeout(2)
    assert client.recv(10) == b""
    client.close()
