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


def test_a_worker_is_told_while_the_master_takes_its_keep_alive_connections_back():
    from master.core import board as fields
    from master.core.board import Board

    loop = EventLoop()
    made = RoundRobinHandle("127.0.0.1", 0, loop, persistent=True)
    worker = PlayedWorker(1)
    worker.board = Board.create()
    try:
        made.add(worker, worker.reply)
        assert worker.board[fields.TAKES_BACK] == 1
        made.remove(worker)  # it drains (a rolling restart, a scale-down): the listener stays open
        assert worker.board[fields.TAKES_BACK] == 1
        made.close()  # a shutdown: draining workers close their keep-alive connections themselves
        assert worker.board[fields.TAKES_BACK] == 0
    finally:
        made.close()
        loop.close()
        worker.board.close()


def test_the_pool_shares_every_keep_alive_client_among_the_workers_that_take_from_it():
    from master.core import board as fields
    from master.core import pool as wire
    from master.core.board import Board

    loop = EventLoop()
    made = RoundRobinHandle("127.0.0.1", 0, loop, persistent=True)
    made.keepalive_pool = True
    workers = [PlayedWorker(i) for i in (1, 2, 3)]
    for worker in workers:
        worker.board = Board.create()
    try:
        for worker in workers:
            made.add(worker, worker.reply)
        table = made.pool.table
        assert table.get(table.slots, wire.TAKERS) == 3
        for worker, kept in zip(workers, (10, 12, 8)):
            worker.board[fields.KEPT] = kept  # clients each keeps from its lane
        made._tick()
        assert table.get(table.slots, wire.CLIENTS) == 30 and table.share() == 10
        made.remove(workers[0])  # it drains: it takes nothing more, and its clients go to the others
        assert table.get(table.slots, wire.TAKERS) == 2
        made._tick()
        assert table.get(table.slots, wire.CLIENTS) == 20 and table.share() == 10
    finally:
        made.close()
        loop.close()
        for worker in workers:
            worker.board.close()
