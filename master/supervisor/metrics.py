"""Prometheus metrics, aggregated in the master (never scraped from one random worker).

Served by the master's own endpoint (admin_http.py, in the master's loop) from the
arbiter's latest snapshot, which the loop refreshes once a second.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("master.metrics")
REFRESH = 1.0


class ClusterCollector(Collector):
    """Turns the arbiter's snapshot into metric families."""

    def __init__(self, snapshot_source: Any) -> None:
        self.source = snapshot_source

    def collect(self) -> Iterator[Any]:
        """Yield every metric family of the current snapshot."""
        snapshot = self.source()
        if not snapshot:
            return
        master, workers = snapshot["master"], snapshot["workers"]
        info = InfoMetricFamily("pycluster", "The cluster's policy and app")
        info.add_metric([], {"policy": master["policy"], "app": master["app"], "bind": master["bind"]})
        yield info
        total = CounterMetricFamily("pycluster_requests", "Requests served by all workers, past and present")
        total.add_metric([], master["requests_total"])
        yield total
        per_worker = CounterMetricFamily("pycluster_worker_requests", "Requests served per worker",
                                         labels=["worker", "pid"])
        in_flight = GaugeMetricFamily("pycluster_worker_in_flight", "Requests in flight per worker",
                                      labels=["worker", "pid"])
        rss = GaugeMetricFamily("pycluster_worker_rss_bytes", "Resident memory per worker", labels=["worker", "pid"])
        uptime = GaugeMetricFamily("pycluster_worker_uptime_seconds", "Seconds since the worker started",
                                   labels=["worker", "pid"])
        for worker in workers:
            labels = [str(worker["id"]), str(worker["pid"])]
            per_worker.add_metric(labels, worker["requests"])
            in_flight.add_metric(labels, worker["in_flight"])
            rss.add_metric(labels, worker["rss"])
            uptime.add_metric(labels, worker["uptime"])
        yield from (per_worker, in_flight, rss, uptime)
        flight_total = GaugeMetricFamily("pycluster_in_flight", "Requests in flight in all workers")
        flight_total.add_metric([], sum(w["in_flight"] for w in workers))
        yield flight_total
        restarts = CounterMetricFamily("pycluster_worker_restarts", "Worker replacements by reason",
                                       labels=["reason"])
        for reason, count in sorted(master["restarts"].items()):
            restarts.add_metric([reason], count)
        yield restarts
        states = GaugeMetricFamily("pycluster_workers", "Workers by state", labels=["state"])
        for state in ("none", "online", "listening", "disconnected", "dead"):
            states.add_metric([state], sum(1 for w in workers if w["state"] == state))
        yield states
        target = GaugeMetricFamily("pycluster_workers_target", "Workers wanted")
        target.add_metric([], master["target_workers"])
        yield target
        master_rss = GaugeMetricFamily("pycluster_master_rss_bytes", "Resident memory of the master")
        master_rss.add_metric([], master["rss"])
        yield master_rss
        master_cpu = CounterMetricFamily("pycluster_master_cpu_seconds", "CPU time used by the master")
        master_cpu.add_metric([], master["cpu_seconds"])
        yield master_cpu
        yield _held(master)


def _held(master: dict) -> GaugeMetricFamily:
    held = GaugeMetricFamily("pycluster_keepalive_connections_held",
                             "rr: keep-alive connections the master holds between requests, by where",
                             labels=["where"])
    held.add_metric(["pool"], master.get("pooled", 0))  # in the pool the workers share (master/core/pool.py)
    held.add_metric(["parked"], master.get("parked", 0))  # watched by the master itself
    return held


def metrics_route(arbiter: Any) -> Callable[[], tuple[int, str, bytes]]:
    """The /metrics handler: rendered once per REFRESH by the loop, so a flood of scrapes costs no CPU."""
    latest: dict[str, Any] = {"snapshot": None, "text": b""}
    registry = CollectorRegistry()
    registry.register(ClusterCollector(lambda: latest["snapshot"]))

    def refresh() -> None:
        latest["snapshot"] = arbiter.snapshot()
        latest["text"] = generate_latest(registry)
        arbiter.loop.call_later(REFRESH, refresh, ref=False)

    refresh()
    return lambda: (200, CONTENT_TYPE_LATEST, latest["text"])


def ready_route(arbiter: Any) -> Callable[[], tuple[int, str, bytes]]:
    """The /ready handler: 200 while the master serves, 503 while it starts, drains or stops."""

    def ready() -> tuple[int, str, bytes]:
        if arbiter.ready():
            return 200, "application/json", b'{"ready": true}\n'
        return 503, "application/json", ('{"ready": false, "state": "%s"}\n' % arbiter.state).encode()

    return ready
