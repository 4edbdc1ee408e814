"""The dashboard: one page, its assets, and the JSON it polls, on the master's own endpoint.

GET /dashboard (and /) is the page; GET /dashboard.json is the `ctl status --json` snapshot
plus the history ring (history.py); /cluster.json is the view of every replica (peers.py).
The feed samples the arbiter once a second from the loop, like /metrics does, and each
answer is encoded at most once per sample: there are only two bodies per sample (the whole
ring, and its last RECENT samples for a client that is up to date), so a hundred open pages
cost the master two encodings a second, not a hundred.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import time
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qsl

from ..core.net import format_bind
from .history import FIELDS, Beat, History
from .peers import PeerPoller

log = logging.getLogger("master.dashboard")

SAMPLE_INTERVAL = 1.0
RECENT = 10             # samples in the answer to a client that already has the rest
MAX_QUERY_FIELDS = 4
ASSET_DIR = "dashboard_page"
# URL path -> (file in master/supervisor/dashboard_page/, content type). Read once, at start-up.
ASSETS = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
    "/dashboard/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/dashboard/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8"),
    "/dashboard/uPlot.LICENSE": ("uPlot.LICENSE", "text/plain; charset=utf-8"),
}
SEQ = re.compile(r"^[0-9]{1,15}$")
Response = tuple[int, str, bytes]


class QueryError(ValueError):
    """A query string /dashboard.json cannot use; its message is the error the client gets."""


def parse_since(query: str) -> int:
    """The `since=SEQ` of a query string (0 when absent); QueryError for anything else."""
    if not query:
        return 0
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise QueryError(f"malformed query string {query[:80]!r}: expected since=SEQ") from None
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - {"since"})
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0][:40]!r}: /dashboard.json takes only since=SEQ")
    if len(names) > 1:
        raise QueryError("since given more than once")
    value = pairs[0][1]
    if not SEQ.match(value):
        raise QueryError(f"since must be a sample number (a whole number, 0 or more), got {value[:40]!r}")
    return int(value)


def error_response(status: int, message: str) -> Response:
    """A JSON error the page (and curl) can show as it is."""
    return status, "application/json", json.dumps({"error": message}).encode() + b"\n"


class Feed:
    """Samples the arbiter into a History once a second and answers /dashboard.json."""

    def __init__(self, arbiter: Any, history: History | None = None, *, peers: str = "",
                 wall: Callable[[], float] = time.time) -> None:
        self.arbiter = arbiter
        self.history = history or History()
        self.wall = wall
        self.peers = peers
        self.instance = secrets.token_hex(8)  # tells a restarted master from the one a client knew
        self.host = socket.gethostname()
        self.snapshot: dict[str, Any] | None = None
        self.stale_after = max(3.0, 3 * arbiter.cfg.heartbeat_interval)
        self._bodies: dict[str, bytes] = {}

    def start(self) -> None:
        """Take the first sample now and one every SAMPLE_INTERVAL after."""
        self._tick()

    def _tick(self) -> None:
        self.sample()
        # ref=False: a pending sample never keeps the stopping master's loop alive.
        self.arbiter.loop.call_later(SAMPLE_INTERVAL, self._tick, ref=False)

    def sample(self) -> None:
        """One sample of the arbiter; drops the bodies encoded for the previous one."""
        snapshot = self.arbiter.snapshot()
        beats = {w.id: Beat(w.last_heartbeat, w.started_monotonic) for w in self.arbiter.primary.workers.values()}
        self.history.record(snapshot, beats, self.wall(), self.arbiter.loop.clock(), self.stale_after)
        self.snapshot = snapshot
        self._bodies.clear()

    def body(self, since: int) -> bytes:
        """The answer for a client that has every sample up to `since` (0: none)."""
        latest = self.history.seq
        kind = "recent" if 0 < since and latest - RECENT <= since <= latest else "full"
        if kind not in self._bodies:
            after = latest - RECENT if kind == "recent" else 0
            samples, events = self.history.since(after)
            self._bodies[kind] = json.dumps({
                "instance": self.instance, "host": self.host, "seq": latest, "full": kind == "full",
                "interval": SAMPLE_INTERVAL,
                "fields": FIELDS, "peers": self.peers or None, "snapshot": self.snapshot,
                "samples": samples, "events": events,
            }, separators=(",", ":")).encode()
        return self._bodies[kind]

    def handle(self, query: str) -> Response:
        """GET /dashboard.json[?since=SEQ]."""
        try:
            since = parse_since(query)
        except QueryError as exc:
            return error_response(400, str(exc))
        return 200, "application/json", self.body(since)


def asset_routes() -> dict[str, Callable[[], Response]]:
    """The page and its files, read from the package once (they ship in the wheel as package data)."""
    folder = resources.files("master.supervisor").joinpath(ASSET_DIR)
    routes = {}
    for path, (name, content_type) in ASSETS.items():
        try:
            body = folder.joinpath(name).read_bytes()
        except OSError as exc:  # an install without its package data: /metrics and /ready still work
            log.warning("dashboard file %s missing (%s): the dashboard is off", name, exc)
            routes[path] = lambda: error_response(503, "this install lacks the dashboard's files (package data)")
            continue
        routes[path] = lambda body=body, content_type=content_type: (200, content_type, body)
    routes["/"] = routes["/dashboard"]
    return routes


class Dashboard:
    """What install() started: the feed, and the peer poller when the aggregate view is on."""

    def __init__(self, feed: Feed, poller: PeerPoller | None) -> None:
        self.feed = feed
        self.poller = poller

    def close(self) -> None:
        """Stop the peer poller's thread (the feed's timer ends with the loop)."""
        if self.poller is not None:
            self.poller.close()


def install(admin: Any, arbiter: Any) -> Dashboard:
    """Register the dashboard's routes on `admin`, start sampling, and poll the peers if there are any."""
    peers = arbiter.cfg.dashboard_peers
    feed = Feed(arbiter, peers=",".join(format_bind(host, port) for host, port in peers))
    for path, handler in asset_routes().items():
        admin.route(path, handler)
    admin.route("/dashboard.json", feed.handle, query=True)
    poller = PeerPoller(peers, feed.instance) if peers else None
    admin.route("/cluster.json", poller.handle if poller is not None else _no_peers)
    feed.start()
    if poller is not None:
        poller.start()
    return Dashboard(feed, poller)


def _no_peers() -> Response:
    return error_response(404, "the aggregate view is off: set --dashboard-peers (DASHBOARD_PEERS) to "
                               "HOST:PORT, a name whose DNS records are every replica's metrics endpoint")
