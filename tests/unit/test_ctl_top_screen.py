"""`ctl top`'s screen from a dashboard answer (render() is pure), and where it looks for the master."""
import pytest

from master.supervisor.top import Feed, TopError, as_text, default_url, render, sparkline


def fed(reload=None):
    feed = Feed("http://127.0.0.1:9100")
    feed.answer = {"host": "box", "snapshot": {
        "master": {"pid": 41, "state": "running", "policy": "rr", "target_workers": 2, "uptime": 65.0,
                   "generation": 1, "restarts": {"crash": 1}, "requests_total": 12345,
                   "reload": reload or {"state": "idle"}},
        "workers": [{"id": 3, "pid": 301, "state": "listening", "in_flight": 2, "rss": 31 << 20, "uptime": 60.0,
                     "requests": 6000, "restarts": 0, "draining": False},
                    {"id": 4, "pid": 402, "state": "listening", "in_flight": 0, "rss": 30 << 20, "uptime": 5.0,
                     "requests": 300, "restarts": 1, "draining": False}]}}
    feed.samples.extend({"seq": i, "t": 1000.0 + i, "rps": 300.0, "in_flight": 2,
                         "w": {"3": [250.0, 2, 0], **({"4": [50.0 + i, 0, 0]} if i > 5 else {})}} for i in range(10))
    feed.events = {1: {"id": 1, "t": 1004.0, "text": "worker 2 (pid 202) SIGKILL: crash → respawn",
                       "verdict": "respawn"}}
    feed.updated = 1010.0
    return feed


def test_the_screen_has_the_totals_and_one_row_per_worker_with_its_rate():
    text = as_text(render(fed(), width=140, height=40, now=1010.0))
    assert "master 41 running" in text and "policy rr" in text and "workers 2/2" in text
    assert "requests/s 300" in text and "restarts 1 (crash 1)" in text and "requests 12,345" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip().startswith("w")
            and line.split()[0][1:].isdigit()}
    assert rows["w3"][1:4] == ["301", "listening", "250"]
    assert rows["w4"][1:4] == ["402", "listening", "59.0"]
    assert "SIGKILL: crash → respawn" in text and "● live" in text


def test_a_rolling_restart_shows_its_progress():
    reload = {"state": "running", "replaced": 1, "total": 2, "current": {"old": 301, "new": 999}}
    text = as_text(render(fed(reload), width=140, now=1010.0))
    assert "rolling restart 1/2" in text and "now 301 → 999" in text


def test_old_numbers_are_marked_stale():
    feed = fed()
    feed.error = "cannot read http://127.0.0.1:9100/dashboard.json: connection refused"
    text = as_text(render(feed, now=1010.0))
    assert "○ stale" in text and "connection refused (showing the last numbers)" in text


def test_before_any_answer_the_screen_says_what_it_waits_for():
    feed = Feed("http://127.0.0.1:9")
    feed.error = "cannot read http://127.0.0.1:9/dashboard.json: Connection refused"
    assert "Connection refused" in as_text(render(feed))


def test_sparkline_scales_to_the_top_and_leaves_gaps():
    assert sparkline([0, 50, 100, None], 100, 4) == "▁▅█ "
    assert sparkline([1.0], 0, 3) == "  ▁"


def test_default_url_follows_metrics_bind():
    assert default_url({}) == "http://127.0.0.1:9100"
    assert default_url({"METRICS_BIND": "0.0.0.0:9200"}) == "http://127.0.0.1:9200"
    assert default_url({"METRICS_BIND": "[::]:9200"}) == "http://[::1]:9200"
    with pytest.raises(TopError, match="METRICS_BIND is off"):
        default_url({"METRICS_BIND": "none"})


def test_a_bad_url_is_one_clear_error():
    with pytest.raises(TopError, match="invalid --url"):
        Feed("ftp://x:1")
    with pytest.raises(TopError, match="bad port"):
        Feed("http://127.0.0.1:99999")
