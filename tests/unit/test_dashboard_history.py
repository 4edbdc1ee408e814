"""The history ring (master/supervisor/history.py): rates from heartbeats, gaps, events, bounds."""
from master.supervisor.history import Beat, History


def snapshot(workers, target=2, reload=None, exits=()):
    """A status snapshot with just what the history reads."""
    return {"master": {"target_workers": target, "reload": reload or {"state": "idle"}, "recent_exits": list(exits)},
            "workers": [{"id": wid, "requests": requests, "in_flight": 1, "rss": 1000 * wid}
                        for wid, requests in workers]}


def test_a_rate_is_requests_between_two_heartbeats_over_their_interval():
    history = History()
    beats = {1: Beat(last_heartbeat=10.0, started=9.0)}
    history.record(snapshot([(1, 100)]), beats, now=1000.0, clock=10.2, stale_after=3)
    # The next heartbeat came 0.8 s later with 120 more requests: 150/s, whatever the sampling tick.
    sample = history.record(snapshot([(1, 220)]), {1: Beat(10.8, 9.0)}, now=1001.0, clock=11.2, stale_after=3)
    assert sample["w"]["1"] == [150.0, 1, 1000]
    assert sample["rps"] == 150.0


def test_a_tick_between_heartbeats_keeps_the_rate_instead_of_reading_zero():
    history = History()
    history.record(snapshot([(1, 100)]), {1: Beat(10.0, 9.0)}, 1000.0, 10.1, 3)
    history.record(snapshot([(1, 200)]), {1: Beat(11.0, 9.0)}, 1001.0, 11.1, 3)
    # No heartbeat since the last tick (the counter did not move): still 100/s, not 0.
    again = history.record(snapshot([(1, 200)]), {1: Beat(11.0, 9.0)}, 1002.0, 11.9, 3)
    assert again["w"]["1"][0] == 100.0


def test_a_new_worker_has_no_rate_until_its_first_heartbeat_then_counts_from_its_start():
    history = History()
    first = history.record(snapshot([(5, 0)]), {5: Beat(20.0, 20.0)}, 1000.0, 20.1, 3)
    assert first["w"]["5"][0] is None and first["rps"] is None
    second = history.record(snapshot([(5, 50)]), {5: Beat(20.5, 20.0)}, 1001.0, 20.6, 3)
    assert second["w"]["5"][0] == 100.0


def test_a_silent_worker_shows_a_gap_not_its_last_rate():
    history = History()
    history.record(snapshot([(1, 0)]), {1: Beat(10.0, 9.0)}, 1000.0, 10.0, 3)
    history.record(snapshot([(1, 100)]), {1: Beat(11.0, 9.0)}, 1001.0, 11.0, 3)
    hung = history.record(snapshot([(1, 100)]), {1: Beat(11.0, 9.0)}, 1005.0, 15.0, 3)
    assert hung["w"]["1"][0] is None


def test_a_worker_that_left_is_forgotten_and_absent_from_later_samples():
    history = History()
    history.record(snapshot([(1, 0), (2, 0)]), {1: Beat(10, 9), 2: Beat(10, 9)}, 1000.0, 10.0, 3)
    sample = history.record(snapshot([(2, 10)]), {2: Beat(11, 9)}, 1001.0, 11.0, 3)
    assert set(sample["w"]) == {"2"}
    assert 1 not in history._rates


def test_the_ring_keeps_only_the_newest_samples_and_since_returns_what_follows_a_seq():
    history = History(seconds=5)
    for second in range(12):
        history.record(snapshot([]), {}, 1000.0 + second, float(second), 3)
    assert [s["seq"] for s in history.samples] == [8, 9, 10, 11, 12]
    samples, _ = history.since(10)
    assert [s["seq"] for s in samples] == [11, 12]
    assert history.since(12) == ([], [])


def test_exits_become_events_once_with_their_reason():
    history = History()
    crash = {"ts": 1000.5, "worker": 3, "pid": 77, "exit": "SIGKILL", "verdict": "respawn", "reason": "crash"}
    history.record(snapshot([]), {}, 1001.0, 1.0, 3)
    history.record(snapshot([], exits=[crash]), {}, 1002.0, 2.0, 3)
    history.record(snapshot([], exits=[crash]), {}, 1003.0, 3.0, 3)  # still in the snapshot's recent exits
    events = [e for e in history.events if e["kind"] == "exit"]
    assert len(events) == 1
    assert events[0]["reason"] == "crash" and events[0]["worker"] == 3 and events[0]["t"] == 1000.5
    assert "SIGKILL" in events[0]["text"]
    _, since_events = history.since(2)
    assert since_events == []  # recorded with sample 2: a client that has sample 2 has it


def test_a_rolling_restart_is_on_the_timeline_start_steps_and_end_and_in_every_sample_while_it_runs():
    history = History()
    running = {"state": "running", "generation": 1, "total": 2, "replaced": 0, "started": 1000.2}
    history.record(snapshot([], reload=running), {}, 1001.0, 1.0, 3)
    step = history.record(snapshot([], reload={**running, "replaced": 1}), {}, 1002.0, 2.0, 3)
    assert step["rolling"] == [1, 2]
    done = history.record(snapshot([], reload={**running, "state": "done", "replaced": 2, "finished": 1002.5}),
                          {}, 1003.0, 3.0, 3)
    assert done["rolling"] is None
    texts = [e["text"] for e in history.events if e["kind"] == "rolling"]
    assert texts == ["rolling restart started: generation 1, 2 workers", "rolling restart: 1/2 replaced",
                     "rolling restart done: 2 replaced"]
    assert [e["phase"] for e in history.events if e["kind"] == "rolling"] == ["start", "step", "done"]


def test_a_new_target_is_an_event():
    history = History()
    history.record(snapshot([], target=2), {}, 1000.0, 0.0, 3)
    history.record(snapshot([], target=4), {}, 1001.0, 1.0, 3)
    assert [e["text"] for e in history.events] == ["target 2 → 4 workers"]


def test_events_are_bounded():
    history = History(max_events=3)
    for target in range(10):
        history.record(snapshot([], target=target + 1), {}, 1000.0 + target, float(target), 3)
    assert len(history.events) == 3
