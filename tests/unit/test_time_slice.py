"""When a computing request gives the CPU away (master/worker/time_slice.py): the pure decision."""
from master.worker.time_slice import TimeSlicer, should_yield

APP, OTHER = object(), object()


def test_a_request_in_app_code_yields():
    assert should_yield(APP, {APP}, "app.views")


def test_a_greenlet_outside_the_app_never_yields():
    assert not should_yield(OTHER, {APP}, "app.views")


def test_engine_gevent_and_greenlet_code_is_never_interrupted():
    for module in ("master.worker.http.connection", "master.worker.runtime", "gevent.hub", "gevent._socket3",
                   "greenlet"):
        assert not should_yield(APP, {APP}, module)


def test_library_code_the_app_calls_may_yield_as_under_threads():
    for module in ("flask.app", "json.encoder", "redis.client"):
        assert should_yield(APP, {APP}, module)


def test_a_slice_of_zero_installs_no_timer():
    slicer = TimeSlicer(0)
    assert slicer.install() is False and not slicer.installed


def test_enter_and_leave_mark_the_calling_greenlet():
    slicer = TimeSlicer(0.002)
    me = slicer.enter()
    assert me in slicer.in_app
    slicer.leave(me)
    assert not slicer.in_app
