"""When a computing request gives the CPU away (master/worker/time_slice.py): the pure decisions."""
from greenlet import getcurrent

from master.worker.time_slice import COMPUTED, LONG, STREAK, TimeSlicer, Turn, next_streak, should_yield


def test_a_request_of_a_computing_connection_yields_in_app_code():
    assert should_yield(1, STREAK, "app.views")


def test_a_light_connection_s_request_runs_on_until_it_has_used_long_slices():
    assert not should_yield(1, 0, "app.views")
    assert not should_yield(LONG - 1, STREAK - 1, "app.views")
    assert should_yield(LONG, 0, "app.views")


def test_engine_gevent_and_greenlet_code_is_never_interrupted():
    for module in ("master.worker.http.connection", "master.worker.runtime", "gevent.hub", "gevent._socket3",
                   "greenlet"):
        assert not should_yield(LONG * 10, STREAK, module)


def test_library_code_the_app_calls_may_yield_as_under_threads():
    for module in ("flask.app", "json.encoder", "redis.client"):
        assert should_yield(1, STREAK, module)


def test_a_streak_grows_with_each_request_that_computed_and_a_light_one_ends_it():
    streak = 0
    for _ in range(STREAK + 2):
        streak = next_streak(streak, COMPUTED)
    assert streak == STREAK  # capped: one light request is enough to end it
    assert next_streak(streak, 0) == 0


def test_one_ring_in_a_request_is_chance_not_computing():
    """A ring may land in a 0.1 ms request; that alone does not extend a streak."""
    assert next_streak(STREAK - 1, COMPUTED - 1) == 0


def test_a_client_that_sends_a_slow_request_now_and_then_never_becomes_a_computing_one():
    """1 request in 8 of a slice or more (the wrk mixed profile): its requests keep FIFO order."""
    streak = 0
    for n in range(1, 100):
        rings = 3 if n % 8 == 0 else 0
        assert not should_yield(rings, streak, "app.views")
        streak = next_streak(streak, rings)


def test_a_slice_of_zero_installs_no_timer():
    slicer = TimeSlicer(0)
    assert slicer.install() is False and not slicer.installed


def test_leave_records_the_request_on_its_connection():
    slicer, turn = TimeSlicer(0.002), Turn()
    me = slicer.enter(turn)
    assert me is getcurrent() and slicer.in_app[me] is turn
    turn.rings = COMPUTED  # as if the timer had rung twice in this request
    slicer.leave(me)
    assert not slicer.in_app
    assert (turn.streak, turn.rings) == (1, 0)


def test_the_load_counts_as_computing_only_after_several_computing_requests_lately():
    from master.worker.time_slice import COMPUTING_SEEN

    slicer = TimeSlicer(0.002)
    assert not slicer.computing_lately(1.0, 100.0)
    for t in range(COMPUTING_SEEN - 1):
        slicer.computed.append(99.2 + t * 0.1)
    assert not slicer.computing_lately(1.0, 100.0)  # one outlier or a few: not yet
    slicer.computed.append(99.9)
    assert slicer.computing_lately(1.0, 100.0)
    assert not slicer.computing_lately(1.0, 101.5)  # the oldest of them is past the window
