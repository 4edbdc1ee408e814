"""The balancing decisions, pure: where connections and requests go, who gives connections up,
when a worker counts as stalled, and what a worker answers at a request boundary."""
from __future__ import annotations

from collections import Counter

from master.core import board as fields
from master.core.board import Board
from master.scheduling.rebalance import shed_plan
from master.scheduling.rr.placement import (CATCH_UP_MAX, KEPT_WITHIN, STALL_AFTER, WORK_WITHIN, WorkerLoad, place_new,
                                           place_request, placed_for_newcomer, settle_placed, stalled)
from master.worker.balance import CLOSE, HAND_BACK, KEEP, Balancer


def load(connections=0, busy=0, unread=0, room=16, kept=0):
    return WorkerLoad(unread=unread, connections=connections, busy=busy, room=room, kept=kept)


def test_equal_loads_take_strict_turns():
    assert place_new([load(), load(), load()], 7) == [0, 1, 2, 0, 1, 2, 0]


def test_new_connections_fill_the_emptiest_worker_first():
    # After a crash: the survivor holds 8 keep-alive clients, the newcomer none; 4 clients reconnect.
    assert place_new([load(connections=8, kept=8, busy=1), load()], 4) == [1, 1, 1, 1]
    # Past the band the lighter one takes them; within it the counts decide.
    assert place_new([load(connections=5, kept=5), load()], 5) == [1, 1, 1, 0, 1]
    assert Counter(place_new([load(connections=3, kept=3), load()], 9)) == {1: 5, 0: 4}


def test_a_worker_far_behind_gets_no_new_connections_and_room_is_respected():
    assert place_new([load(unread=WORK_WITHIN + 2), load()], 2) == [1, 1]
    assert place_new([load(busy=WORK_WITHIN + 2), load()], 2) == [1, 1]  # requests in flight or waiting
    assert place_new([load(busy=3, unread=WORK_WITHIN), load()], 3) == [1, 1, 1]
    assert place_new([load(room=1), load(room=0)], 3) == [0]
    assert place_new([load(room=0), load(room=0)], 3) == []
    # The fewest keep-alive clients but far behind, against more clients and no work: work decides.
    assert place_new([load(unread=WORK_WITHIN + 5), load(kept=KEPT_WITHIN + 5)], 1) == [1]


def test_open_connections_with_nothing_outstanding_do_not_steer_new_ones():
    """A worker a moment behind (sharing its CPU) holds connections it has read but not parsed a
    request from, or answered and not closed yet: that is not load, and the spread stays strict."""
    assert place_new([load(connections=9), load(connections=1)], 4) == [0, 1, 0, 1]
    spread = Counter(place_new([load(connections=9, room=1000), load(room=1000)], 1000))
    assert spread == {0: 500, 1: 500}


def test_work_a_few_ahead_is_a_moment_behind_and_keeps_its_turns():
    """Between equal workers on a shared machine, work in hand differs by a few all the time: up
    to WORK_WITHIN more still gets its turn, so the spread over many new connections stays strict."""
    assert place_new([load(busy=1, unread=WORK_WITHIN - 2), load()], 4) == [0, 1, 0, 1]
    spread = Counter(place_new([load(kept=6, busy=3, room=1000), load(kept=7, room=1000)], 1000))
    assert abs(spread[0] - spread[1]) <= KEPT_WITHIN, spread


def test_a_worker_passed_over_for_a_moment_gets_its_count_back_within_the_bands():
    # Worker 0 was behind for a while and worker 1 took 10 more; both are level now. Worker 0 gets
    # the next ones, but only while it stays within the bands of the lighter one.
    assert place_new([load(), load()], 4, placed=[0, 10]) == [0, 0, 0, 1]
    assert place_new([load(busy=WORK_WITHIN + 1), load()], 2, placed=[0, 10]) == [1, 0]


def test_moments_of_load_leave_equal_workers_with_equal_counts():
    """Two equal workers; every tenth round worker 0 is far behind and is passed over. Turns
    alone would leave it with fewer; the counts make it up."""
    placed = {0: 0, 1: 0}
    for round_ in range(200):
        behind = load(unread=WORK_WITHIN + 2) if round_ % 10 == 0 else load()
        for index in place_new([behind, load()], 3, [placed[0], placed[1]]):
            placed[index] += 1
        placed = settle_placed(placed)
    assert abs(placed[0] - placed[1]) <= 3, placed


def test_placed_counts_are_rebased_and_the_credit_is_bounded():
    assert settle_placed({1: 5, 2: 3}) == {1: 2, 2: 0}
    assert settle_placed({1: 100, 2: 50}) == {1: CATCH_UP_MAX, 2: 0}  # a worker slower for good
    assert settle_placed({}) == {}
    assert placed_for_newcomer({1: 7, 2: 3}) == 7  # a newcomer brings no credit; its emptiness is load
    assert placed_for_newcomer({}) == 0


def test_a_request_goes_to_the_least_busy_worker_whatever_the_connections():
    assert place_request([load(connections=0, busy=3), load(connections=9, busy=0)]) == 1
    assert place_request([load(busy=1, unread=2), load(busy=2)]) == 1
    assert place_request([load(busy=1), load(busy=1)]) == 0  # a tie goes in turn order
    assert place_request([load(room=0), load(busy=5, room=0)]) is None


def test_a_connection_given_up_to_rebalance_does_not_go_back_to_its_over_share_giver():
    # The giver holds the 8 keep-alive clients and looks least busy (new connections, placed by
    # count, went to the other): the request still goes to the other worker.
    survivor, newcomer = load(connections=8, kept=8, busy=0), load(connections=3, kept=0, busy=2, unread=1)
    assert place_request([survivor, newcomer]) == 0  # without knowing the giver: the least busy
    assert place_request([survivor, newcomer], giver=0) == 1


def test_a_giver_within_its_share_may_get_its_connection_back():
    # Idle parking (not rebalancing): the least busy worker is the right one, giver or not.
    assert place_request([load(kept=4, busy=0), load(kept=3, busy=2)], giver=0) == 0
    # And a giver over its share still serves it when nobody else has room.
    assert place_request([load(kept=8), load(kept=0, room=0)], giver=0) == 0


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


class _Loop:
    """Just enough of the primary's loop for Rebalancer: timers are recorded, never run."""

    def call_later(self, *_args, **_kwargs):
        return None


class _Worker:
    def __init__(self, worker_id: int, board: Board) -> None:
        self.id, self.board = worker_id, board


def test_the_rebalancer_spreads_keep_alive_connections_not_every_connection():
    """8 keep-alive clients on one worker, one-request connections on the other: counting every
    connection says balanced (8 and 8); the keep-alive ones (KEPT) say 8 and 0."""
    from master.scheduling.rebalance import Rebalancer

    holder, newcomer = Board.create(), Board.create()
    try:
        holder[fields.CONNECTIONS], holder[fields.KEPT] = 8, 8
        newcomer[fields.CONNECTIONS], newcomer[fields.KEPT] = 8, 0
        workers = [_Worker(1, holder), _Worker(2, newcomer)]
        rebalancer = Rebalancer(_Loop(), lambda: workers)
        rebalancer.tick()
        assert holder[fields.SHED_ASKED] == 0  # one look is not enough: it must last
        rebalancer.tick()
        assert holder[fields.SHED_ASKED] == 4 and newcomer[fields.SHED_ASKED] == 0
    finally:
        holder.close()
        newcomer.close()
