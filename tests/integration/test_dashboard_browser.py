"""The dashboard in headless Chromium against a real master under load: one series per worker,
and after `ctl kill-worker` the killed worker's series ends while its successor's appears and rises."""
from __future__ import annotations

import re
import time

from support import free_port
from support_ui import dashboard_env, metrics_port, require_tool, wait_rates

from loadtest.browser import Browser
from loadtest.loadgen import LoadGen

# Per series of the requests/s chart: its legend label and its values, as uPlot holds them.
SERIES = """(() => {
  const board = window.pyclusterDashboard, chart = board && board.charts.rps;
  if (!chart) return null;
  return chart.plot.series.slice(1).map((s, i) => ({label: s.label, values: chart.plot.data[i + 1]}));
})()"""
LEGEND = "[...document.querySelectorAll('#chart-rps .u-legend .u-series .u-label')].map(e => e.textContent)"
TABLE = "[...document.querySelectorAll('#workers tbody tr')].map(r => r.dataset.worker)"
EVENTS = "[...window.pyclusterDashboard.state.events.values()].map(e => [e.kind, e.worker, e.reason])"


def workers_drawn(browser):
    """{worker id: values} for the chart's worker series, once each has a rate above 0 at its end."""
    series = browser.evaluate(SERIES) or []
    found = {re.fullmatch(r"worker (\d+)", s["label"]).group(1): s["values"] for s in series
             if s["label"].startswith("worker ")}
    return found if found and all(v and (v[-1] or 0) > 0 for v in found.values()) else None


def test_one_series_per_worker_and_a_killed_workers_successor_appears_and_rises(master, tmp_path):
    require_tool("chromium")
    m = master(workers=2, env=dashboard_env())
    # A new connection per request: the policy places every request, so a new worker gets its share.
    gen = LoadGen("127.0.0.1", m.port, ["/sleep?s=0.02"], concurrency=4, keepalive=False, duration=80,
                  max_requests=30_000).start()
    try:
        wait_rates(m)
        with Browser() as browser:
            browser.goto(f"http://127.0.0.1:{metrics_port(m)}/")
            before = _wait(browser, lambda: workers_drawn(browser), "a rising series per worker")
            ids = {str(w["id"]) for w in m.status()["workers"]}
            assert set(before) == ids
            legend = browser.evaluate(LEGEND)
            assert sorted(x for x in legend if x.startswith("worker ")) == sorted(f"worker {i}" for i in ids)
            assert sorted(browser.evaluate(TABLE)) == sorted(ids)
            browser.screenshot(tmp_path / "dashboard-before.png")

            victim = min(ids, key=int)
            assert m.ctl("kill-worker", victim).returncode == 0

            def successor_rising():
                drawn = browser.evaluate(SERIES) or []
                values = {s["label"]: s["values"] for s in drawn}
                new = [label for label in values if label.startswith("worker ") and label[7:] not in ids]
                if not new:
                    return None
                rising = values[new[0]]
                points = [v for v in rising if v is not None]
                # It appears (no value before it existed) and rises (its last rates are above 0).
                if rising[0] is None and len(points) >= 3 and all(v > 0 for v in points[-2:]):
                    return new[0], rising, values[f"worker {victim}"]
                return None

            label, rising, killed = _wait(browser, successor_rising, "the new worker's series to rise", 30)
            assert killed[-1] is None, "the killed worker's series goes on"
            assert ["exit", int(victim), "crash"] in browser.evaluate(EVENTS)
            assert label[7:] in {str(w["id"]) for w in m.status()["workers"]}
            shot = browser.screenshot(tmp_path / "dashboard-after.png")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
            assert browser.errors == []
    finally:
        gen.stop()
        gen.join()


def _wait(browser, probe, what, timeout=20.0, show=SERIES):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; page errors: {browser.errors}; "
                                 f"on the page: {browser.evaluate(show)}")
        time.sleep(0.25)


REPLICAS = """(() => {
  const board = window.pyclusterDashboard, chart = board && board.charts.replicas;
  if (!chart || document.getElementById("replicas").hidden) return null;
  const rows = [...document.querySelectorAll("#replicas-table tbody tr")].map(r => r.textContent);
  return {labels: chart.plot.series.slice(1).map(s => s.label), rows,
          last: chart.plot.data.slice(1).map(ys => ys[ys.length - 1])};
})()"""


def test_with_peers_the_page_shows_every_replica_and_which_one_answered(master):
    require_tool("chromium")
    port_a, port_b = free_port(), free_port()
    peers = f"127.0.0.1:{port_a},127.0.0.1:{port_b}"
    a = master(workers=1, env=dashboard_env(port_a, DASHBOARD_PEERS=peers))
    b = master(workers=2, env=dashboard_env(port_b, DASHBOARD_PEERS=peers))
    gens = [LoadGen("127.0.0.1", m.port, ["/sleep?s=0.02"], concurrency=2, keepalive=False, duration=40,
                    max_requests=10_000).start() for m in (a, b)]
    try:
        with Browser() as browser:
            browser.goto(f"http://127.0.0.1:{port_b}/")

            def both_replicas_serving():
                view = browser.evaluate(REPLICAS)
                return view if view and len(view["rows"]) == 2 and all((v or 0) > 0 for v in view["last"]) else None

            view = _wait(browser, both_replicas_serving, "both replicas on the page", 30, REPLICAS)
            # One series per replica (named by address, sorted), and their sum.
            assert [label.split(" ")[0] for label in view["labels"]] == sorted(peers.split(",")) + ["all"]
            this_one = [row for row in view["rows"] if "this one" in row]
            assert len(this_one) == 1 and f"127.0.0.1:{port_b}" in this_one[0]
            assert browser.errors == []
    finally:
        for gen in gens:
            gen.stop()
            gen.join()
