"""The balancing decisions, pure: where connections and requests go, who gives connections up,
when a worker counts as stalled, and what a worker answers at a request boundary."""
from __future__ import annotations

from collections import Counter

from master.core import board as fields
from master.core.board import Board
from master.scheduling.rebalance import shed_plan
from master.scheduling.rr.placement import STALL_AFTER, WorkerLoad, place_new, place_request, stalled
from master.worker.balance import CLOSE, HAND_BACK, KEEP, Balancer


def load(connections=0, busy=0, unread=0, room=16):
    return WorkerLoad(unread=unread, connections=connections, busy=busy, room=room)


def test_equal_loads_take_strict_turns():
    assert place_new([load(), load(), load()], 7) == [0, 1, 2, 0, 1, 2, 0]


def test_new_connections_fill_the_emptiest_worker_first():
    # After a crash: the survivor holds 8, the newcomer none; 4 clients reconnect.
    assert place_new([load(connections=8, busy=1), load()], 4) == [1, 1, 1, 1]
    assert Counter(place_new([load(connections=3), load()], 9)) == {1: 6, 0: 3}


def test_unread_handoffs_count_as_connections_and_room_is_respected():
    assert place_new([load(unread=2), load()], 2) == [1, 1]
    assert place_new([load(room=1), load(room=0)], 3) == [0]
    assert place_new([load(room=0), load(room=0)], 3) == []


def test_equal_connections_prefer_the_less_busy_worker():
    assert place_new([load(connections=2, busy=1), load(connections=2, busy=0)], 1) == [1]


def test_a_request_goes_to_the_least_busy_worker_whatever_the_connections():
    assert place_request([load(connections=0, busy=3), load(connections=9, busy=0)]) == 1
    assert place_request([load(busy=1, unread=2), load(busy=2)]) == 1
    assert place_request([load(busy=1), load(busy=1)]) == 0  # a tie goes in turn order
    assert place_request([load(room=0), load(busy=5, room=0)]) is None


def test_shed_plan_asks_the_heaviest_for_their_excess():
    assert shed_plan({1: 16, 2: 0}, {1: 0, 2: 0}) == {1: 8, 2: 0}
    assert shed_plan({1: 10, 2: 5, 3: 0}, {}) == {1: 5, 2: 0, 3: 0}


def test_shed_plan_leaves_a_small_imbalance_and_a_lone_worker_alone():
    assert shed_plan({1: 9, 2: 8}, {}) == {1: 0, 2: 0}
    assert shed_plan({1: 40}, {}) == {1: 0}
    assert shed_plan({}, {}) == {}


def test_a_worker_is_stalled_only_with_work_waiting_and_no_progress():
    assert not stalled(0, None, 0.0, 100.0)  # nothing waiting: idle, not stalled
    assert not stalled(3, 99.5, 0.0, 100.0)  # waiting for half a second only
    assert stalled(3, 100.0 - STALL_AFTER, 0.0, 100.0)
    assert not stalled(3, 90.0, 99.8, 100.0)  # it did something 0.2 s ago


def test_a_worker_keeps_connections_until_asked_then_gives_up_as_many():
    board = Board.create()
    try:
        balancer = Balancer(board)
        assert balancer.at_boundary() == KEEP
        board[fields.SHED_ASKED] = 2
        assert [balancer.at_boundary() for _ in range(3)] == [CLOSE, CLOSE, KEEP]  # no lane: reconnect
        balancer.lane = object()  # under rr it hands them back instead
        board[fields.SHED_ASKED] = 3
        assert balancer.at_boundary() == HAND_BACK and board[fields.SHED_DONE] == 3
        assert balancer.park_after is not None
    finally:
        board.close()


def test_the_board_is_shared_memory_between_processes():
    import os

    board = Board.create()
    try:
        pid = os.fork()
        if pid == 0:  # the worker's side: its own mapping of the same descriptor
            child = Board(board.fd)
            child.bump(fields.CONNECTIONS, 7)
            os._exit(0)
        os.waitpid(pid, 0)
        assert board[fields.CONNECTIONS] == 7
    finally:
        board.close()
